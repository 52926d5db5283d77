"""The on-device check: packaged models run on ONNX Runtime's aarch64 build under qemu-user.

Tests marked ``arm64`` run the real aarch64 wheel in the userland ``edgepack env
--setup-arm64`` builds (skipped, with that line, where it is not built); the others check
the bad-input paths and the pieces that need no emulator.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgepack.core.errors import BadInput
from edgepack.export import arm64_check, arm64_userland
from edgepack.export.arm64_check import (Arm64CheckFailed, check_arm64, check_cpus,
                                         cpuinfo_template, failure_line, make_view)
from edgepack.export.package import MANIFEST, DeviceCheck, PackageConfig, package_model
from edgepack.zoo.arm64_models import (bert_encoder, demo_int8_model, depthwise_cnn, dynamic_int8,
                                        export, x86_optimized_cnn)

arm64 = pytest.mark.arm64


@pytest.fixture(scope="module")
def userland():
    return arm64_userland.find_userland()


def device_check(userland, cpus=("cortex-a72", "cortex-a76"), atol=1e-4, rtol=1e-3):
    return DeviceCheck(userland, tuple(cpus), atol, rtol)


@arm64
def test_the_demos_int8_model_gives_the_same_answers_on_aarch64(tmp_path, userland):
    manifest = package_model(demo_int8_model(tmp_path), tmp_path / "pkg",
                             device_check=device_check(userland))
    check = manifest["device_checks"]["arm64"]
    assert check["ok"] and set(check["cpus"]) == {"cortex-a72", "cortex-a76"}
    for cpu in check["cpus"].values():
        assert cpu["machine"] == "aarch64" and cpu["onnxruntime"] == check["userland"][
            "onnxruntime"]
        assert {r["batch"] for r in cpu["outputs"]} == {1, 4}
        assert all(r["top1_agreement"] == 1.0 for r in cpu["outputs"])
    # qemu gives each emulated CPU its own features: the int8 dot product on the A76 only
    assert "asimddp" in check["cpus"]["cortex-a76"]["cpu_features"]
    assert "asimddp" not in check["cpus"]["cortex-a72"]["cpu_features"]
    assert "qemu-aarch64 version" in check["qemu"]
    assert json.loads((tmp_path / "pkg" / MANIFEST).read_text())["device_checks"] == \
        json.loads(json.dumps(manifest["device_checks"]))


@arm64
def test_a_cnn_with_depthwise_convolutions_matches(tmp_path, userland):
    check = package_model(depthwise_cnn(tmp_path), tmp_path / "pkg", device_check=device_check(
        userland, cpus=["cortex-a53"]))["device_checks"]["arm64"]
    assert check["ok"] and check["cpus"]["cortex-a53"]["max_abs"] < 1e-4


@arm64
def test_a_transformer_encoder_and_its_int8_version_match(tmp_path, userland):
    model = bert_encoder(tmp_path)
    fp32 = package_model(model, tmp_path / "fp32", device_check=device_check(
        userland, cpus=["neoverse-n1"]))["device_checks"]["arm64"]
    assert fp32["ok"] and fp32["cpus"]["neoverse-n1"]["outputs"][0]["mean_cosine"] > 0.999999
    int8 = package_model(dynamic_int8(model, tmp_path / "bert.int8.onnx"), tmp_path / "int8",
                         device_check=device_check(userland))
    assert int8["device_checks"]["arm64"]["ok"]


@arm64
def test_an_operator_the_aarch64_build_lacks_fails_naming_it(tmp_path, capsys):
    from edgepack.cli.main import main

    model = x86_optimized_cnn(tmp_path)
    assert package_model(model, tmp_path / "x86")["parity"]["ok"]   # fine on x86
    code = main(["package", str(model), "-o", str(tmp_path / "pkg"), "--check", "arm64",
                 "--arm64-cpu", "cortex-a76"])
    err = capsys.readouterr().err
    assert code == 1
    assert "com.microsoft.nchwc:Conv" in err and "aarch64 build does not have operator" in err
    assert not (tmp_path / "pkg").exists()                # nothing half-written


@arm64
def test_outputs_beyond_the_tolerance_fail_with_every_figure(tmp_path, userland):
    import onnxruntime as ort

    model = export(torch.nn.Linear(8, 4), torch.randn(1, 8), tmp_path / "linear.onnx")
    feeds = [{"input": np.ones((1, 8), np.float32)}]
    here = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    shifted = [{"logits": here.run(None, feeds[0])[0] + 0.01}]     # not what x86 computes
    with pytest.raises(Arm64CheckFailed, match="differ from x86 beyond atol=0.0001") as err:
        check_arm64(model, feeds, shifted, userland, ["cortex-a72"])
    assert "\u2717 arm64 cortex-a72: logits (batch 1): max abs err 1.00e-02" in str(err.value)


@arm64
def test_the_package_stage_runs_the_check_from_a_recipe(tmp_path):
    from edgepack.core.stage import StageInput
    from edgepack.export.package import _run_stage

    model = export(torch.nn.Linear(8, 4), torch.randn(1, 8), tmp_path / "linear.onnx")
    config = PackageConfig.from_dict({"kind": "package", "check": "arm64",
                                      "arm64_cpus": ["cortex-a53"]})
    (tmp_path / "stage").mkdir()
    result = _run_stage(config, StageInput(artifact=model, folder=tmp_path / "stage"))
    assert result.record["device_checks"]["arm64"]["cpus"]["cortex-a53"]["ok"]


# ---- bad input, and the parts that need no emulator -------------------------------------

def test_unknown_cpus_and_negative_tolerances_are_bad_input(tmp_path, capsys):
    from edgepack.cli.main import main

    with pytest.raises(BadInput, match="unknown arm64 CPU model 'cortex-a9'; choose from"):
        check_cpus(["cortex-a9"])
    with pytest.raises(ValueError, match="package.device_atol=-1.0 is out of range"):
        PackageConfig.from_dict({"kind": "package", "device_atol": -1})
    with pytest.raises(ValueError, match="package.check='arm32' is not valid"):
        PackageConfig.from_dict({"kind": "package", "check": "arm32"})
    model = export(torch.nn.Linear(8, 4), torch.randn(1, 8), tmp_path / "linear.onnx")
    assert main(["package", str(model), "-o", str(tmp_path / "pkg"), "--check", "arm64",
                 "--arm64-cpu", "apple-m1"]) == 2
    assert "unknown arm64 CPU model 'apple-m1'" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_no_qemu_is_exit_2_naming_the_package(tmp_path, capsys, monkeypatch):
    from edgepack.cli.main import main

    monkeypatch.setattr(arm64_userland.shutil, "which", lambda name: None)
    model = export(torch.nn.Linear(8, 4), torch.randn(1, 8), tmp_path / "linear.onnx")
    assert main(["package", str(model), "-o", str(tmp_path / "pkg"), "--check", "arm64"]) == 2
    err = capsys.readouterr().err
    assert "needs qemu-user" in err and "apt-get install qemu-user-static" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "pkg").exists()


def test_no_userland_and_no_root_is_exit_2_saying_how(tmp_path, capsys, monkeypatch):
    from edgepack.cli.main import main

    if not (arm64_userland.shutil.which("qemu-aarch64-static")
            and arm64_userland.shutil.which("debootstrap")):
        pytest.skip("needs qemu-user-static and debootstrap installed, to reach the root check")
    monkeypatch.setenv("EDGEPACK_ARM64_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(arm64_userland.os, "geteuid", lambda: 1000)
    model = export(torch.nn.Linear(8, 4), torch.randn(1, 8), tmp_path / "linear.onnx")
    assert main(["package", str(model), "-o", str(tmp_path / "pkg"), "--check", "arm64"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "edgepack env --setup-arm64" in err
    assert not (tmp_path / "pkg").exists() and not (tmp_path / "empty-cache").exists() or \
        not any((tmp_path / "empty-cache").iterdir())


def test_a_missing_userland_names_where_it_looked(tmp_path):
    with pytest.raises(BadInput, match="no arm64 userland at .*edgepack env --setup-arm64"):
        arm64_userland.require_userland(tmp_path)


def test_failure_lines_name_the_operator():
    unregistered = {"stage": "load", "error": "Fail: [ONNXRuntimeError] : 1 : FAIL : Fatal "
                    "error: com.microsoft.nchwc:Conv(1) is not a registered function/op"}
    line = failure_line("cortex-a72", arm64_check.Path("m.ort"), unregistered)
    assert "operator com.microsoft.nchwc:Conv (opset 1)" in line and "NCHWc" in line
    no_kernel = {"stage": "load", "error": "NOT_IMPLEMENTED : Could not find an implementation "
                 "for ConvInteger(10) node with name 'conv_1'"}
    line = failure_line("cortex-a53", arm64_check.Path("m.ort"), no_kernel)
    assert "no kernel for operator ConvInteger (opset 10, node 'conv_1')" in line
    other = {"stage": "run", "error": "RuntimeError: out of memory\nmore"}
    assert failure_line("max", arm64_check.Path("m.ort"), other).endswith(
        "m.ort failed to run: RuntimeError: out of memory")


def test_the_guest_root_hides_the_hosts_proc_and_sys(tmp_path):
    """qemu -L reads a guest path from the view when it exists there: the view has the
    userland's folders, and its own /proc/cpuinfo and /sys CPU lists, never the host's."""
    root = tmp_path / "userland" / "root"
    for name in ("usr", "etc", "proc", "sys", "tmp"):
        (root / name).mkdir(parents=True)
    (tmp_path / "run").mkdir()
    view = make_view(arm64_userland.Userland(tmp_path / "userland", {}), tmp_path / "run")
    assert (view / "usr").resolve() == (root / "usr").resolve()
    assert not (view / "proc").is_symlink() and not (view / "sys").is_symlink()
    assert (view / "sys/devices/system/cpu/possible").read_text() == "0\n"
    assert (view / "proc/cpuinfo").exists()
    text = cpuinfo_template("cortex-a76")
    assert "CPU part\t: 0xd0b" in text and "{features}" in text


def test_a_recipe_whose_check_cannot_run_stops_before_any_stage(monkeypatch):
    monkeypatch.setattr(arm64_userland.shutil, "which", lambda name: None)
    with pytest.raises(BadInput, match="needs qemu-user"):
        PackageConfig.from_dict({"kind": "package", "check": "arm64"})
    assert PackageConfig.from_dict({"kind": "package"}).check == ""   # no check: no qemu needed


def test_a_bad_model_is_said_before_any_userland_is_built(tmp_path, capsys, monkeypatch):
    from edgepack.cli.main import main

    def must_not_build(*_args, **_kwargs):
        raise AssertionError("the userland was built for a model that cannot be packaged")

    monkeypatch.setattr(arm64_userland, "build_userland", must_not_build)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    assert main(["package", str(tmp_path / "broken.onnx"), "-o", str(tmp_path / "pkg"),
                 "--check", "arm64"]) == 2
    assert "broken.onnx" in capsys.readouterr().err
