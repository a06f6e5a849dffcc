"""The grammar's option table is written once (``funnelbench.layout.OPTIONS``): the README's
copy, the module's docstring and ``funnelbench parse --help`` show that table, and the parser
reads every form it lists, where it says."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import funnelbench.layout as L
from funnelbench.cli import app

README = Path(__file__).resolve().parents[1] / "docs" / "grammar.md"  # the grammar page
BEGIN, END = "<!-- The option table and the long forms are made from", "<!-- end of the option table -->"


def test_the_readme_table_is_the_one_made_from_the_options():
    text = README.read_text()
    block = text[text.index(BEGIN) : text.index(END)]
    block = block[block.index("-->") + 3 :].strip()
    assert block == L.options_markdown(), (
        "the README's option table differs from funnelbench.layout.OPTIONS; paste "
        "the output of options_markdown() between the two comments:\n" + L.options_markdown()
    )


def test_the_docstring_and_parse_help_show_the_table():
    assert "{OPTION_TABLE}" not in L.__doc__ and L._options_rst() in L.__doc__
    result = CliRunner().invoke(app, ["parse", "--help"], terminal_width=160)
    assert result.exit_code == 0
    from funnelbench.cli.layout_cmds import GRAMMAR_HELP

    assert GRAMMAR_HELP.endswith(L.options_markdown())
    help_text = " ".join(result.output.split())
    for option in L.OPTIONS:
        for form in option.forms:
            assert re.search(rf"(^|\s){re.escape(form)}(,|\s)", L.__doc__.replace("``", " ")), form
            assert f" {form}" in help_text, form
        assert option.meaning.split()[0].strip("`") in help_text
        if option.long_form:
            assert option.long_form in help_text and f"``{option.long_form}``" in L.__doc__


def _read(text):
    """The options as the parser reads them, before any check of the model: (stage's, global)."""
    stages, glob = L._Parser(text).parse()
    return stages[-1][-1], glob


@pytest.mark.parametrize("option", L.OPTIONS, ids=lambda o: "/".join(o.forms))
def test_the_parser_reads_every_form_the_table_lists_where_it_says(option):
    written = [(word, value) for word, value in option.flags.items()]
    for key in option.keys:
        if option.values == "int":
            written += [(f"{key}3", 3), (f"{key}=3", 3)]
        else:
            written += [(f"{key}={word}", {"on": True, "off": False}.get(word, word)) for word in option.values]
    assert written
    for text, value in written:
        assert getattr(_read(f"B6(197)-6(99), {text}")[1], option.sets) == value, text
        if option.where.startswith("stage"):
            assert getattr(_read(f"B6(197)-6(99, {text})")[0], option.sets) == value, text
        else:
            with pytest.raises(L.LayoutError, match="applies to the whole model, not to one stage"):
                _read(f"B6(197)-6(99, {text})")
        if option.where.startswith("global, "):  # with its stem only
            stem = option.where.split(", ")[1]
            with pytest.raises(L.LayoutError, match=f"applies to the {stem.lower()} stem only"):
                L.parse_layout(f"B6(197)-6(99), {text}")


def test_error_messages_list_the_options_as_before():
    """The lists of options an error names, as the parser wrote them by hand before the table."""
    stage = (
        "h<int>, m<int>, a<int>, qkvbias, noqkvbias, mean, max, mean2d, max2d, k<int>, pqo, nopqo, newpos or nonewpos"
    )
    whole = (
        "h<int>, m<int>, a<int>, qkvbias, noqkvbias, mean, max, mean2d, max2d, k<int>, pqo, nopqo, newpos, "
        "nonewpos, img<int>, patch<int>, t2t, t2t_t, tok<int>, ps<int>, iters<int>, share, fe<int>, "
        "pos=learned|sincos|none, cls or avg"
    )
    with pytest.raises(L.LayoutError) as err:
        L.parse_layout("B6(197)-6(99, zzz)")
    assert str(err.value).endswith(f"expected {stage}")
    with pytest.raises(L.LayoutError) as err:
        L.parse_layout("B6(197)-6(99), zzz")
    assert str(err.value).endswith(f"expected {whole}")
