"""--dso and --config: every request for a classic module refuses the start."""

from __future__ import annotations

import os

import pytest

from rtpp.cli import UsageError, parse_args
from rtpp.modules import CLASSIC_MODULES, module_name


def start_error(*argv: str) -> str:
    with pytest.raises(UsageError) as info:
        parse_args(["-F", *argv])
    return info.value.message


@pytest.mark.parametrize(
    "path,name",
    [
        ("../modules/acct_csv/.libs/rtpp_acct_csv_debug.so", "acct_csv"),
        ("/usr/lib/rtpproxy/rtpp_catch_dtmf.so", "catch_dtmf"),
        ("ice_lite", "ice_lite"),
        ("/opt/x/libfoo.so", "libfoo"),
    ],
)
def test_module_name_from_its_path(path, name):
    assert module_name(path) == name


def test_dso_of_an_existing_file_is_refused_naming_it(tmp_path):
    broken = tmp_path / "rtpp_badmod1.so"
    broken.write_bytes(b"not an ELF object")
    message = start_error("--dso", str(broken))
    assert message == (
        f'--dso {broken}: module "badmod1" cannot be loaded: loadable modules are not supported'
    )


def test_dso_of_accounting_names_the_option_that_replaces_it(tmp_path):
    module = tmp_path / "rtpp_acct_csv.so"
    module.write_bytes(b"\x7fELF")
    assert start_error("--dso", str(module)).endswith(
        "per-call accounting records are built in: use --acct instead"
    )
    # A bare module name (the classic's statically linked modules) is refused alike.
    assert "use --acct instead" in start_error("--dso", "acct_csv")


def test_dso_of_a_module_without_equivalent_says_what_is_lost():
    message = start_error("--dso", "/nowhere/rtpp_catch_dtmf_debug.so")
    assert message.endswith("and RFC 4733 DTMF event detection is not available")


def test_dso_missing_or_empty():
    assert start_error("--dso", "/not/there/garbage/100500") == (
        "realpath: /not/there/garbage/100500: No such file or directory"
    )
    assert start_error("--dso", "") == "--dso: empty module path"


def test_every_classic_module_has_a_refusal():
    for name in CLASSIC_MODULES:
        assert name in start_error("--dso", name)


def test_config_without_modules_is_accepted(tmp_path):
    conf = tmp_path / "rtpproxy.conf"
    conf.write_text("# nothing to load\nmodules { }\nother_section { key = value }\n")
    assert parse_args(["-F", "--config", str(conf)]).config_file == str(conf)


def test_config_loading_a_module_is_refused_naming_it(tmp_path):
    conf = tmp_path / "rtpproxy.conf"
    conf.write_text("modules {\n  acct_csv {\n    load = /x/rtpp_acct_csv.so\n  }\n}\n")
    assert start_error("--config", str(conf)) == (
        f'--config {conf}: module "acct_csv" cannot be loaded: loadable modules are not '
        "supported; per-call accounting records are built in: use --acct instead"
    )
    conf.write_text('modules "dtls_gw" { }\n')
    assert "the DTLS-SRTP gateway is not available" in start_error("--config", str(conf))


@pytest.mark.parametrize(
    "text,detail",
    [
        ("modules {:\n  acct_csv { }\n}\n", "line 1: unexpected ':'"),
        ("modules {\n  acct_csv {\n", "line 3: missing '}'"),
        ("modules = acct_csv\n", "'modules' is not a section"),
    ],
)
def test_broken_config_is_refused_naming_file_and_line(tmp_path, text, detail):
    conf = tmp_path / "broken.conf"
    conf.write_text(text)
    assert start_error("--config", str(conf)) == f"--config {conf}: {detail}"


def test_config_that_is_not_text_or_not_readable(tmp_path):
    conf = tmp_path / "binary.conf"
    conf.write_bytes(b"\xff\xfe\x00modules")
    assert start_error("--config", str(conf)) == f"--config {conf}: not a UTF-8 text file"
    missing = os.path.join(tmp_path, "none.conf")
    assert start_error("--config", missing).startswith(
        f"rtpp_cfile_process: open failed: {missing}: "
    )
