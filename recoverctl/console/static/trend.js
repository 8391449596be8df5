/* RTO/RPO trend charts and the phase breakdown of a drill, drawn with the vendored uPlot.
 *
 * Shared by the console (/trends) and the self-contained HTML drill report: each element with
 * class "rc-trend" names in data-trend the id of a <script type="application/json"> holding
 *   {"drills": [{"id", "at", "verdict", "rto_s", "rpo_s", "rto_target_s", "rpo_target_s"}],
 *    "phases": [["select", 1.2], ...], "phases_of": <drill id>}
 * (drills oldest first). One chart per metric, measured values on a log scale (seconds and hours
 * both readable), the metric's target drawn once as a dashed line, failed drills as hollow red
 * rings. After drawing, the element carries data-points and data-failed for tests and tools.
 */
(function () {
  "use strict";

  // The same words as recoverctl's human_duration: 12.3s, 4m05s, 1h02m, 1d02h.
  function duration(s) {
    if (s === null || s === undefined || isNaN(s)) return "-";
    var sign = s < 0 ? "-" : "";
    var a = Math.abs(s);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (a < 60) return sign + a.toFixed(1) + "s";
    if (a < 3600) return sign + Math.floor(a / 60) + "m" + two(Math.floor(a % 60)) + "s";
    if (a < 86400) return sign + Math.floor(a / 3600) + "h" + two(Math.floor(a % 3600 / 60)) + "m";
    return sign + Math.floor(a / 86400) + "d" + two(Math.floor(a % 86400 / 3600)) + "h";
  }

  // Log scales cannot show zero: a value this small is drawn at the floor of the axis.
  var FLOOR = 0.01;
  var LADDER = [0.01, 0.1, 1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400];

  function metricChart(el, data, metric, label, colour) {
    var drills = data.drills;
    var xs = [], values = [], failed = [], targets = [];
    drills.forEach(function (d) {
      var v = d[metric + "_s"];
      xs.push(d.at);
      values.push(v === null || v === undefined ? null : Math.max(v, FLOOR));
      failed.push(d.verdict === "fail" && v !== null && v !== undefined ? Math.max(v, FLOOR) : null);
      var tgt = d[metric + "_target_s"];
      targets.push(tgt === null || tgt === undefined ? null : tgt);
    });
    var all = values.concat(targets).filter(function (v) { return v !== null; });
    var lo = Math.min.apply(null, all.length ? all : [1]);
    var hi = Math.max.apply(null, all.length ? all : [1]);
    var box = document.createElement("figure");
    box.className = "rc-chart";
    var caption = document.createElement("figcaption");
    caption.textContent = label + " per drill (log scale; dashed: target; red ring: failed drill)";
    box.appendChild(caption);
    el.appendChild(box);
    // Two charts side by side where they fit, one per row on a phone.
    var room = el.clientWidth || 600;
    var width = Math.max(280, Math.min(room >= 700 ? Math.floor((room - 24) / 2) : room, 640));
    var opts = {
      width: width,
      height: 240,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: {
          distr: 3,
          log: 10,
          range: function () { return [Math.max(FLOOR, lo / 3), hi * 3]; },
        },
      },
      axes: [
        {},
        {
          size: 64,
          // Ticks at round durations (1s, 1m, 1h...) instead of powers of ten (1m40s, 2h46m).
          splits: function (u, axis, min, max) {
            return LADDER.filter(function (v) { return v >= min && v <= max; });
          },
          // Label every tick (uPlot's log axis labels only powers of ten by default).
          filter: function (u, splits) { return splits; },
          values: function (u, splits) { return splits.map(duration); },
        },
      ],
      series: [
        { label: "UTC" },
        {
          label: label,
          stroke: colour,
          width: 2,
          points: { size: 7, fill: colour },
          value: function (u, v) { return duration(v); },
        },
        {
          label: "failed",
          stroke: "#c62828",
          width: 0,
          paths: function () { return null; },
          points: { show: true, size: 13, width: 3, fill: "#fff", stroke: "#c62828" },
          value: function (u, v) { return v === null ? "" : duration(v); },
        },
        {
          label: label + " target",
          stroke: "#555",
          dash: [6, 4],
          width: 1.5,
          // A target holds until the next drill's: a step, never a slope between two targets.
          paths: uPlot.paths.stepped({ align: 1 }),
          points: { show: false },
          value: function (u, v) { return duration(v); },
        },
      ],
    };
    var chart = new uPlot(opts, [xs, values, failed, targets], box);
    box.dataset.metric = metric;
    box.dataset.points = String(values.filter(function (v) { return v !== null; }).length);
    box.dataset.failed = String(failed.filter(function (v) { return v !== null; }).length);
    return chart;
  }

  var PHASE_COLOURS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#ad1457"];

  function phaseBar(el, data) {
    var phases = {}, names = [];
    (data.phases || []).forEach(function (p) { names.push(p[0]); phases[p[0]] = p[1]; });
    if (!names.length) return;
    var total = names.reduce(function (s, n) { return s + (phases[n] || 0); }, 0) || 1;
    var box = document.createElement("figure");
    box.className = "rc-phases";
    var caption = document.createElement("figcaption");
    caption.textContent = "Phases of drill #" + data.phases_of + " (" + duration(total) + " in all)";
    box.appendChild(caption);
    var bar = document.createElement("div");
    bar.className = "rc-phase-bar";
    bar.setAttribute("role", "img");
    bar.setAttribute(
      "aria-label",
      names.map(function (n) { return n + " " + duration(phases[n]); }).join(", ")
    );
    var legend = document.createElement("ul");
    legend.className = "rc-phase-legend";
    names.forEach(function (n, i) {
      var colour = PHASE_COLOURS[i % PHASE_COLOURS.length];
      var seg = document.createElement("span");
      seg.style.width = (100 * (phases[n] || 0) / total).toFixed(2) + "%";
      seg.style.background = colour;
      seg.title = n + ": " + duration(phases[n]);
      bar.appendChild(seg);
      var item = document.createElement("li");
      var swatch = document.createElement("i");
      swatch.style.background = colour;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(n + " " + duration(phases[n])));
      legend.appendChild(item);
    });
    box.appendChild(bar);
    box.appendChild(legend);
    el.appendChild(box);
  }

  function draw(el) {
    var source = document.getElementById(el.dataset.trend);
    if (!source) return;
    var data = JSON.parse(source.textContent);
    el.textContent = "";
    if (data.drills && data.drills.length) {
      metricChart(el, data, "rto", "RTO", "#1565c0");
      metricChart(el, data, "rpo", "RPO", "#6a1b9a");
    }
    phaseBar(el, data);
    el.dataset.drawn = "true";
  }

  function drawAll() {
    Array.prototype.forEach.call(document.querySelectorAll(".rc-trend"), draw);
  }

  window.recoverctlTrend = { draw: draw, drawAll: drawAll, duration: duration };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
