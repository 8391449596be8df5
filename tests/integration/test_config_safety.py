"""Config files that would hurt: alias bombs and deep nesting are refused fast with exit 2."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from recoverctl.config import BoundedLoader, expanded_size, load_yaml
from recoverctl.errors import ConfigError
from tests.conftest import Cli

# Ten aliases per level, nine levels: 10^9 scalars once expanded, 60 short lines on disk.
BILLION_LAUGHS = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    + ["sources: {}", "policies: [{name: bomb, match: {x: y}, action: notify, extra: *a8}]"]
)

ADDRESS_SPACE = 1024 * 1024 * 1024


def _limit_memory() -> None:
    # On a build without the node budget the expansion hits this and fails, instead of taking the
    # machine's memory (and everyone's test run) with it.
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_billion_laughs_is_refused_with_exit_2_and_bounded_memory(cli: Cli) -> None:
    path = cli.write_config(BILLION_LAUGHS)
    r = subprocess.run(
        [sys.executable, "-m", "recoverctl", "config", "check"],
        env=cli.env,
        cwd=cli.home,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"config file '{path}' is refused" in r.stderr
    assert "more than 50000 nodes" in r.stderr and "Traceback" not in r.stderr


def test_expansion_is_counted_before_construction() -> None:
    import yaml

    node = yaml.compose("a: &x [1, 2, 3]\nb: [*x, *x, *x]", Loader=yaml.SafeLoader)
    # root + (a, [1,2,3] = 4) + (b, [*x,*x,*x] = 1 + 3*4)
    assert expanded_size(node, 1000) == 1 + 1 + 4 + 1 + 13
    assert load_yaml("a: &x [1, 2]\nb: *x\n", "t") == {"a": [1, 2], "b": [1, 2]}

    class Tiny(BoundedLoader):
        max_nodes = 10

    with pytest.raises(yaml.YAMLError, match="more than 10 nodes"):
        yaml.load("a: &x [1, 2, 3]\nb: [*x, *x, *x]", Loader=Tiny)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x [1, *x]\n", "contains it"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("a: [1\n", "is not valid YAML"),
    ],
)
def test_hostile_yaml_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_yaml(text, "config file 'x.yaml'")
    assert e.value.exit_code == 2
