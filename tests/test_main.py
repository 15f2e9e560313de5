"""The command line (wsserver.__main__): pure parsing, no process.

What ``wsserver check`` finds is tested end to end in test_doctor.py.
"""

from __future__ import annotations

import io

import pytest

from wsserver.__main__ import STDIN, parse_args, read_token


@pytest.mark.parametrize("token", ["-DE6pTg9TD6vjbtTQlB50w", "--x", "plain"])
def test_a_token_may_start_with_a_dash(token):
    # django-sesame tokens are base64url: with UUID keys, 1 in 64 starts with "-".
    assert parse_args(["check", "--token", token]).token == token
    assert parse_args(["check", f"--token={token}"]).token == token


@pytest.mark.parametrize(
    "argv", [["check", "--token"], ["check", "--token", "-"], ["check", "--token=-"]]
)
def test_a_token_without_a_value_comes_from_standard_input(argv):
    assert parse_args(argv).token == STDIN == "-"


def test_a_token_is_one_line_of_standard_input():
    assert read_token(io.StringIO("  AAAAAg0DZIvu2HO_KcpZWMBz \nnext\n")) == (
        "AAAAAg0DZIvu2HO_KcpZWMBz"
    )
    for empty in ["", "\n", "   \n"]:
        with pytest.raises(ValueError, match="--token -: no token on standard input"):
            read_token(io.StringIO(empty))


def test_the_help_says_how_to_pass_a_token_on_standard_input(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--token TOKEN" in help_text
    assert "`--token -`" in help_text and "standard input" in help_text
