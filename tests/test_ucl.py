"""The --config file reader (the nginx-like UCL subset the classic's files use)."""

from __future__ import annotations

import pytest

from rtpp import ucl

MODULE_FILE = """\
# accounting and HEP export, as an operator of the classic would write them
modules {
    acct_csv {
        load = /usr/lib/rtpproxy/rtpp_acct_csv.so;
    }
    acct_rtcp_hep {
        /* a block comment /* nested */ still inside */
        load = "/usr/lib/rtpproxy/rtpp_acct_rtcp_hep.so"
        capt_host  = 192.0.2.10
        capt_port  = 9060, capt_ptype: udp
    }
}
"""


def test_sections_pairs_and_separators():
    top = ucl.parse(MODULE_FILE)
    assert [key for key, _ in top] == ["modules"]
    modules = ucl.section(top, "MODULES")[0]
    assert [name for name, _ in modules] == ["acct_csv", "acct_rtcp_hep"]
    assert modules[0][1] == [("load", "/usr/lib/rtpproxy/rtpp_acct_csv.so")]
    assert modules[1][1] == [
        ("load", "/usr/lib/rtpproxy/rtpp_acct_rtcp_hep.so"),
        ("capt_host", "192.0.2.10"),
        ("capt_port", "9060"),
        ("capt_ptype", "udp"),
    ]


def test_json_arrays_strings_and_heredocs():
    assert ucl.parse('{"a": {"b": [1, "x y", []]}, "c": true}') == [
        ("a", [("b", ["1", "x y", []])]),
        ("c", "true"),
    ]
    doc = "name value with spaces\nquoted 'it\\'s'\ntext = <<EOT\nline 1\nline 2\nEOT\n"
    assert ucl.parse(doc) == [
        ("name", "value with spaces"),
        ("quoted", "it's"),
        ("text", "line 1\nline 2"),
    ]
    assert ucl.parse('s = "tab\\there \\u00e9"') == [("s", "tab\there \u00e9")]


def test_named_section_nests_one_level():
    assert ucl.parse('modules "acct_csv" { load = x }') == [
        ("modules", [("acct_csv", [("load", "x")])])
    ]


def test_empty_documents():
    assert ucl.parse("") == []
    assert ucl.parse("# nothing\n/* at all */\n") == []
    assert ucl.parse("{}") == []
    assert ucl.parse("modules {}") == [("modules", [])]


@pytest.mark.parametrize(
    "text,line,reason",
    [
        ("modules {:\n  a { }\n}\n", 1, "unexpected ':'"),
        ("a {\n  b = 1\n", 3, "missing '}'"),
        ("a = 1\n}\n", 2, "unexpected '}'"),
        ('a = "open\n', 1, "unterminated string"),
        ("a = 1\n/* never closed\n", 2, "unterminated comment"),
        ("alone\n", 1, "missing value for 'alone'"),
        ("a = ;\n", 1, "missing value"),
        ("a = [1, 2\n", 2, "missing ']'"),
        (".include '/etc/passwd'\n", 1, "macros are not supported"),
        ("t = <<EOT\nno end\n", 1, "unterminated here-document <<EOT"),
        ('s = "\\q"', 1, "bad escape \\q"),
        ("{ a = 1 } b = 2", 1, "text after the closing '}'"),
    ],
)
def test_syntax_errors_name_the_line(text, line, reason):
    with pytest.raises(ucl.UclError) as info:
        ucl.parse(text)
    assert (info.value.line, info.value.reason) == (line, reason)


def test_a_value_where_a_section_belongs_is_an_error():
    with pytest.raises(ucl.UclError, match="'modules' is not a section"):
        ucl.section(ucl.parse("modules = acct_csv"), "modules")
