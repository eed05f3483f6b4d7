"""vgcore.cpu: the command line pins torch's and MKL's CPU code path on x86-64 machines with AVX2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vgcore.cpu import PINNED, cpu_flags, pin_code_path

X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text):
        (tmp_path / "cpuinfo").write_text(text)
        return tmp_path / "cpuinfo"
    return write


def test_pins_both_variables_on_x86_with_avx2(cpuinfo):
    env = {}
    assert pin_code_path(env, machine="x86_64", cpuinfo=cpuinfo(X86_AVX2)) == PINNED
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def test_a_users_setting_wins(cpuinfo):
    env = {"ATEN_CPU_CAPABILITY": "default"}
    assert pin_code_path(env, machine="AMD64", cpuinfo=cpuinfo(X86_AVX2)) == {"MKL_CBWR": "AVX2"}
    assert env["ATEN_CPU_CAPABILITY"] == "default"


@pytest.mark.parametrize("machine,text", [("aarch64", "Features\t: fp asimd\n"),
                                          ("x86_64", "flags\t\t: fpu sse2 avx\n"),  # no AVX2
                                          ("x86_64", "")])  # no flags readable
def test_leaves_other_cpus_on_their_own_path(cpuinfo, machine, text):
    env = {}
    assert pin_code_path(env, machine=machine, cpuinfo=cpuinfo(text)) == {} and env == {}


def test_cpu_flags_without_a_cpuinfo_file(tmp_path):
    assert cpu_flags(tmp_path / "missing") == set()


def test_the_command_line_pins_before_torch_loads():
    """What torch reports in a process the CLI started from an environment without the variables."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    code = ("import os, torch; from vgcore.__main__ import main; main(['list']); "
            "print(os.environ.get('ATEN_CPU_CAPABILITY'), os.environ.get('MKL_CBWR'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    expected = "avx2 AVX2" if pin_code_path({}) else "None None"
    assert out.stdout.strip().splitlines()[-1] == expected
    if pin_code_path({}):  # the variables reach torch when the CLI is the process's first import
        probe = "from vgcore.__main__ import main; main(['list']); import torch; print(torch.backends.cpu.get_cpu_capability())"
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == "AVX2"
