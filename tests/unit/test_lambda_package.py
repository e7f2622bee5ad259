"""What `fsmlog package` reads from the template, what it puts in the artifact and asks pip for, and
`fsmlog template`'s warning when nothing would feed the function. No network: pip is not run here
(tests/integration/test_lambda_package.py runs it and the built handler)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eventlog.settings import load_settings
from fsmlog.cli import main
from fsmlog.package import (
    MARKER,
    Artifact,
    FunctionSpec,
    PackageError,
    build,
    function_spec,
    next_steps,
    pip_command,
    requirements,
)
from fsmlog.template import render_template

ROOT = Path(__file__).resolve().parents[2]
AWS_SETTINGS = yaml.safe_load((ROOT / "examples" / "aws" / "settings.yaml").read_text())

FSM = """\
machines:
- name: parcel
  states:
  - name: packed
    initial: true
    do_action: pkgtest_actions.Ship
    transitions:
    - event: shipped
      target: delivered
  - name: delivered
    final: true
"""
ACTIONS = """\
from fsmlog import Action


class Ship(Action):
    def execute(self, context, obj):
        return "shipped"
"""


def _template(path: Path, **function: object) -> Path:
    props = {"Handler": "handlers.lambda_handler", "Runtime": "python3.12", "CodeUri": "build/lambda", **function}
    path.write_text(yaml.safe_dump({"Resources": {"Worker": {"Type": "AWS::Serverless::Function",
                                                             "Properties": props}}}))
    return path


# -- the template ---------------------------------------------------------------------------------


def test_the_rendered_templates_function_points_at_the_build_directory(tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text(render_template(load_settings(AWS_SETTINGS), architecture="arm64", runtime="python3.12"))
    spec = function_spec(template)
    assert (spec.name, spec.handler, spec.runtime) == ("Worker", "handlers.lambda_handler", "python3.12")
    assert spec.code_uri == tmp_path / "build" / "lambda"  # relative to the template, as SAM reads it
    assert (spec.architecture, spec.platform, spec.python_version) == ("arm64", "manylinux2014_aarch64", "3.12")


def test_short_cloudformation_tags_and_globals_are_read(tmp_path):
    template = tmp_path / "t.yaml"
    template.write_text("Globals:\n  Function:\n    Runtime: python3.10\nResources:\n  Fn:\n"
                        "    Type: AWS::Serverless::Function\n    Properties:\n      Handler: handlers.lambda_handler\n"
                        "      CodeUri: out\n      Role: !GetAtt Role.Arn\n")
    spec = function_spec(template)
    assert (spec.runtime, spec.code_uri, spec.platform) == ("python3.10", tmp_path / "out", "manylinux2014_x86_64")


@pytest.mark.parametrize(("function", "setting"), [
    ({"CodeUri": "."}, "CodeUri"),
    ({"CodeUri": "s3://bucket/key.zip"}, "CodeUri"),
    ({"Runtime": "nodejs20.x"}, "Runtime"),
    ({"Architectures": ["sparc"]}, "Architectures"),
    ({"Handler": None}, "Handler"),
])
def test_a_function_that_cannot_be_built_for_names_the_property(tmp_path, function, setting):
    template = _template(tmp_path / "t.yaml", **function)
    with pytest.raises(PackageError) as info:
        function_spec(template)
    assert info.value.setting == setting
    assert "\n" not in str(info.value)


def test_a_missing_template_says_how_to_write_it(tmp_path):
    with pytest.raises(PackageError, match="fsmlog template --out") as info:
        function_spec(tmp_path / "template.yaml")
    assert info.value.code == "template"


# -- requirements and pip ---------------------------------------------------------------------------


def _names(lines: list[str]) -> list[str]:
    return [line.split("==")[0] for line in lines]


def test_requirements_follow_the_sources_and_pin_what_is_installed():
    import msgpack

    embedded = requirements(load_settings({}))
    assert _names(embedded) == ["msgpack", "PyYAML", "tenacity"]
    assert f"msgpack=={'.'.join(map(str, msgpack.version))}" in embedded
    assert _names(requirements(load_settings(AWS_SETTINGS))) == ["msgpack", "PyYAML", "tenacity", "boto3"]
    redis = requirements(load_settings({"PRIMARY_CACHE_SOURCE": "redis://cache:6379/0"}), ["# mine", "requests>=2"])
    assert _names(redis) == ["msgpack", "PyYAML", "tenacity", "redis", "requests>=2"]


def test_pip_installs_wheels_for_the_runtime_never_for_this_machine(tmp_path):
    template = _template(tmp_path / "t.yaml", Architectures=["arm64"])
    command = pip_command(function_spec(template), tmp_path / "art", tmp_path / "req.txt",
                          find_links=["/wheels"], no_index=True)
    flags = " ".join(command[3:])
    for part in ("install", "--target", "--platform=manylinux2014_aarch64 --platform=manylinux_2_28_aarch64",
                 "--python-version 3.12",
                 "--implementation cp", "--only-binary=:all:", f"--requirement {tmp_path / 'req.txt'}",
                 "--find-links /wheels", "--no-index"):
        assert part in flags
    assert command[:3] == [sys.executable, "-m", "pip"]
    older = pip_command(function_spec(_template(tmp_path / "t.yaml", Runtime="python3.11")), tmp_path, tmp_path)
    assert [c for c in older if c.startswith("--platform")] == ["--platform=manylinux2014_x86_64"]


# -- building -----------------------------------------------------------------------------------------


class Pip:
    """Stands in for pip's process: records the command, installs nothing (the integration test runs pip)."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.returncode, self.stderr, self.commands = returncode, stderr, []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        return subprocess.CompletedProcess(command, self.returncode, "", self.stderr)


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "fsm.yaml").write_text(FSM)
    (tmp_path / "app" / "pkgtest_actions.py").write_text(ACTIONS)
    (tmp_path / "app" / "settings.yaml").write_text("MAX_RETRIES: 2\n")
    (tmp_path / "app" / "test_parcel.py").write_text("# a test, not for Lambda\n")
    _template(tmp_path / "template.yaml", Runtime=f"python3.{sys.version_info[1]}")
    return tmp_path


def test_the_artifact_holds_the_function_code_the_users_files_and_the_requirements(project):
    pip = Pip()
    art = build(project / "template.yaml", project / "app" / "fsm.yaml", load_settings({}), run=pip,
                make_zip=True)
    assert art.directory == project / "build" / "lambda"
    top = sorted(p.name for p in art.directory.iterdir() if p.name != "__pycache__")
    assert top == sorted([MARKER, "eventlog", "projections", "handlers", "fsmlog", "fsm.yaml",
                          "pkgtest_actions.py", "settings.yaml", "requirements.txt"])
    assert sorted(p.name for p in (art.directory / "fsmlog").glob("*.py")) == ["__init__.py"]
    assert (art.directory / "handlers" / "triggers" / "kinesis.py").is_file()
    assert art.user_files == ("fsm.yaml", "pkgtest_actions.py", "settings.yaml")
    assert (art.directory / "requirements.txt").read_text().splitlines()[1:] == list(art.requirements)
    [command] = pip.commands
    assert command[command.index("--target") + 1] == str(art.directory)
    assert art.zip_path == project / "build" / "lambda.zip" and art.zip_path.stat().st_size > 0
    again = build(project / "template.yaml", project / "app" / "fsm.yaml", load_settings({}), run=Pip())
    assert again.directory == art.directory  # its own directory is rebuilt


def test_a_directory_it_did_not_build_is_never_deleted(project):
    foreign = project / "build" / "lambda"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(PackageError, match="not built by `fsmlog package`") as info:
        build(project / "template.yaml", project / "app" / "fsm.yaml", load_settings({}), run=Pip())
    assert info.value.setting == "CodeUri"
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_a_pip_failure_is_one_line_naming_the_runtime_and_the_offline_fix_and_leaves_nothing(project):
    pip = Pip(1, "Looking in indexes\nERROR: No matching distribution found for msgpack==1.2.4\n")
    with pytest.raises(PackageError) as info:
        build(project / "template.yaml", project / "app" / "fsm.yaml", load_settings({}), run=pip)
    message = str(info.value)
    assert info.value.code == "pip" and "\n" not in message
    assert "No matching distribution found for msgpack" in message and "--find-links" in message
    assert not function_spec(project / "template.yaml").code_uri.exists()  # nothing half built to deploy


def test_a_missing_requirements_file_is_one_line_naming_the_option(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.delenv("FSMLOG_SETTINGS", raising=False)
    assert main(["package", "app/fsm.yaml", "--requirements", "nope.txt"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --requirements nope.txt: No such file or directory; give a file in pip's requirements format"]
    assert not (project / "build").exists()  # refused before anything was built


def test_what_to_run_next_is_aligned_and_fits_80_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = FunctionSpec("Worker", "handlers.lambda_handler", "python3.12", tmp_path / "build" / "lambda", "arm64")
    artifact = Artifact(tmp_path / "build" / "lambda", tmp_path / "build" / "lambda.zip", spec, (), (), 12_345_678)
    assert next_steps(tmp_path / "template.yaml", tmp_path / "fsm.yaml", artifact) == [
        "built build/lambda (12.3 MB, python3.12 arm64) for handlers.lambda_handler",
        "zip: build/lambda.zip",
        "next:",
        "  sam deploy --guided --template-file template.yaml",
        "  fsmlog start fsm.yaml --machine NAME  # appends to the stream",
        "  fsmlog status ID                      # the deployed function moves it on",
    ]


# -- fsmlog template's warning ------------------------------------------------------------------------


def test_template_without_a_stream_warns_in_one_line_naming_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSMLOG_SETTINGS", raising=False)
    monkeypatch.delenv("PRIMARY_STREAM_SOURCE", raising=False)
    assert main(["template", "--out", "t.yaml"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: template has no stream: set PRIMARY_STREAM_SOURCE to a Kinesis ARN"]
    assert len(warnings[0]) <= 80


def test_template_with_a_stream_does_not_warn(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FSMLOG_SETTINGS", str(ROOT / "examples" / "aws" / "settings.yaml"))
    assert main(["template", "--out", "t.yaml"]) == 0
    assert "warning:" not in capsys.readouterr().err
    assert function_spec(tmp_path / "t.yaml").code_uri == tmp_path / "build" / "lambda"
