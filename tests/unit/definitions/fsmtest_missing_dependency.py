"""A module whose own import of a dependency fails."""

import fsmtest_dependency_that_is_not_installed  # noqa: F401
