"""Started by Python in every process whose PYTHONPATH holds this directory (the tests' `cli`
fixture): installs the test-only fault hooks the environment asks for (tests/faults/)."""

from tests.faults.seam import install_if_asked

install_if_asked()
