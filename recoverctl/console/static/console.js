/* Live refresh: an element with data-refresh="N" is re-fetched every N seconds while the page is
 * visible, and replaced in place (no full reload, scroll position kept). */
(function () {
  "use strict";
  var el = document.querySelector("[data-refresh]");
  if (!el || !window.fetch) return;
  var every = Math.max(5, parseInt(el.dataset.refresh, 10) || 30) * 1000;
  function refresh() {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok || r.redirected) throw new Error(String(r.status)); return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById(el.id);
        if (fresh) { el.replaceWith(fresh); el = fresh; }
      })
      .catch(function () { /* keep the last good board; the next tick tries again */ });
  }
  setInterval(refresh, every);
})();
