"""The Action base class and the import of dotted action paths (projections.actions)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from eventlog.errors import FsmlogError
from projections import actions
from projections.actions import Action, ActionImportError, clear_cache, is_dotted_path, resolve
from projections.errors import ProjectionError

DEFS = Path(__file__).parent / "definitions"
TEST_MODULES = ("shop", "shop.actions", "fsmtest_actions", "fsmtest_broken_import",
                "fsmtest_missing_dependency", "fsmtest_late")


def _forget_modules() -> None:
    for name in TEST_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def action_modules(monkeypatch):
    """Put the test action modules on sys.path, fresh for every test."""
    _forget_modules()
    clear_cache()
    monkeypatch.syspath_prepend(str(DEFS))
    yield
    clear_cache()
    _forget_modules()


def _error(dotted: str) -> ActionImportError:
    with pytest.raises(ActionImportError) as info:
        resolve(dotted)
    assert info.value.dotted == dotted
    assert str(info.value).startswith(f"action {dotted!r}: ")
    return info.value


def test_base_execute_says_what_to_override():
    class Forgot(Action):
        pass

    with pytest.raises(NotImplementedError, match=r"Forgot must override execute\(self, context, obj\)"):
        Forgot().execute({}, {})


def test_action_subclass_is_instantiated_once_and_its_execute_returned():
    import fsmtest_actions

    fn = resolve("fsmtest_actions.Counted")
    assert fn({}, {"n": 3}) == "counted:3"
    assert isinstance(fn.__self__, fsmtest_actions.Counted)
    assert resolve("fsmtest_actions.Counted") is fn
    assert len(fsmtest_actions.INSTANCES) == 1


def test_concurrent_first_resolves_share_one_instance():
    import fsmtest_actions

    results = []

    def work():
        results.append(resolve("fsmtest_actions.Counted"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r is results[0] for r in results)
    assert len(fsmtest_actions.INSTANCES) == 1


def test_plain_function_is_returned_as_is():
    import fsmtest_actions

    fn = resolve("fsmtest_actions.plain")
    assert fn is fsmtest_actions.plain
    assert fn({"x": 7}, {}) == "plain:7"


def test_function_with_optional_parameters_is_accepted():
    assert resolve("fsmtest_actions.flexible")({}, {}) == "flexible"


def test_action_instance_gives_its_execute():
    fn = resolve("fsmtest_actions.GREETER")
    assert fn({}, {}) == "hello"


def test_contract_validate_action():
    validate = resolve("shop.actions.Validate")
    ctx = {"amount": 10}
    assert validate(ctx, {}) == "ok"
    assert ctx["validated"] is True
    assert validate({"amount": 0}, {}) == "reject"


def test_clear_cache_makes_a_new_instance():
    import fsmtest_actions

    first = resolve("fsmtest_actions.Counted")
    clear_cache()
    second = resolve("fsmtest_actions.Counted")
    assert first.__self__ is not second.__self__
    assert len(fsmtest_actions.INSTANCES) == 2


def test_missing_module():
    err = _error("fsmtest_no_such_module.Thing")
    assert "module 'fsmtest_no_such_module' not found" in err.reason
    assert "sys.path" in err.reason


def test_missing_submodule_of_existing_package():
    err = _error("shop.nothing_here.Thing")
    assert "module 'shop.nothing_here' not found" in err.reason


def test_missing_attribute_suggests_close_name():
    err = _error("shop.actions.Validat")
    assert "module 'shop.actions' has no attribute 'Validat'" in err.reason
    assert "did you mean 'Validate'?" in err.reason


def test_class_that_is_not_an_action():
    err = _error("fsmtest_actions.NotAnAction")
    assert "NotAnAction does not subclass fsmlog.Action" in err.reason


def test_non_callable():
    err = _error("fsmtest_actions.NOT_CALLABLE")
    assert "is not an Action subclass or a function (context, obj) but a value of type int: 42" in err.reason


def test_subclass_without_execute():
    err = _error("fsmtest_actions.NoExecute")
    assert "NoExecute does not override execute" in err.reason


def test_base_action_instance_is_refused():
    err = _error("fsmtest_actions.BASE_INSTANCE")
    assert "does not override execute" in err.reason


def test_subclass_needing_constructor_arguments():
    err = _error("fsmtest_actions.NeedsArgs")
    assert "creating NeedsArgs() failed: TypeError" in err.reason
    assert "with no arguments" in err.reason


def test_subclass_failing_in_constructor():
    err = _error("fsmtest_actions.FailsInInit")
    assert "RuntimeError: no credentials in test" in err.reason


def test_function_with_wrong_signature():
    err = _error("fsmtest_actions.one_argument")
    assert "cannot be called as (context, obj)" in err.reason
    assert "(context)" in err.reason


def test_module_failing_at_import_names_the_error():
    err = _error("fsmtest_broken_import.Anything")
    assert "importing module 'fsmtest_broken_import' failed: RuntimeError: boom while importing" in err.reason


def test_missing_dependency_is_not_reported_as_missing_module():
    err = _error("fsmtest_missing_dependency.Anything")
    assert "importing module 'fsmtest_missing_dependency' failed: ModuleNotFoundError" in err.reason
    assert "fsmtest_dependency_that_is_not_installed" in err.reason


@pytest.mark.parametrize("dotted", ["Validate", "shop..Validate", "shop.actions.Validate ", "shop.actions.", "",
                                    ".shop.actions", "shop-x.actions.Validate"])
def test_not_a_dotted_path(dotted):
    err = _error(dotted)
    assert "not a dotted path like 'package.module.Name'" in err.reason
    assert not is_dotted_path(dotted)


def test_is_dotted_path():
    assert is_dotted_path("shop.actions.Validate")
    assert is_dotted_path("m.f")
    assert not is_dotted_path(None)
    assert not is_dotted_path(5)


def test_failures_are_not_cached(tmp_path, monkeypatch):
    _error("fsmtest_late.act")
    (tmp_path / "fsmtest_late.py").write_text("def act(context, obj):\n    return 'late'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve("fsmtest_late.act")({}, {}) == "late"


def test_action_import_error_is_an_fsmlog_error():
    err = _error("fsmtest_actions.NOT_CALLABLE")
    assert isinstance(err, ProjectionError)
    assert isinstance(err, FsmlogError)


def test_successes_are_cached_per_path():
    fn = resolve("fsmtest_actions.plain")
    assert actions._cache["fsmtest_actions.plain"] is fn
    assert "fsmtest_actions.NOT_CALLABLE" not in actions._cache
