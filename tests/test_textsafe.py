"""``auditor.textsafe``: control and invisible characters from the catalog shown as escapes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from auditor.textsafe import display_width, fit, one_line, unambiguous, visible, xml_text

# What a hostile column name or server error text may carry: an ANSI colour, a screen clear, an OSC
# window title, a carriage return that overwrites the line, a right-to-left override, a zero-width
# space, a lone surrogate.
HOSTILE = "a\x1b[31mred\x1b[2J\x1b]0;title\x07\rX\u202eevil\u200bb\ud800\n\tend"


def test_one_line_escapes_every_control_and_invisible_character():
    assert one_line(HOSTILE) == (
        "a\\x1b[31mred\\x1b[2J\\x1b]0;title\\x07\\x0dX\\u202eevil\\u200bb\\ud800\\x0a\\x09end"
    )


def test_visible_keeps_tabs_and_line_feeds_but_not_carriage_returns():
    assert visible(HOSTILE) == (
        "a\\x1b[31mred\\x1b[2J\\x1b]0;title\\x07\\x0dX\\u202eevil\\u200bb\\ud800\n\tend"
    )


def test_ordinary_text_is_returned_unchanged():
    for text in ("", "hr.emp.ssn", "Ünïcødé 名前 🚀", "100% <b>&amp;</b> =SUM(A1)"):
        assert one_line(text) is text and visible(text) is text


def test_spaces_other_than_the_ascii_one_show_as_escapes():
    # Found by a probe: 'dup name' and 'dup\u00a0name' read alike in JUnit, table and markdown
    assert one_line("dup\u00a0name") == "dup\\xa0name"
    assert visible("a\u2009b\u3000c\u202fd") == "a\\u2009b\\u3000c\\u202fd"
    assert unambiguous("x\u1680y") == "x\\u1680y"


def test_xml_text_escapes_only_what_xml_cannot_carry():
    text = "a\x00b\x01c\td\ne\rf\u202eg\ufffeh\ud800"
    assert xml_text(text) == "a\\x00b\\x01c\td\ne\rf\u202eg\\ufffeh\\ud800"


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())))
def test_nothing_unsafe_survives(text):
    shown = one_line(text)
    assert not any(_unsafe(ch) for ch in shown)
    assert not any(_unsafe(ch) for ch in visible(text) if ch not in "\t\n")
    # xml_text's output is always a well-formed element's text and attribute
    element = ET.Element("t", value=xml_text(text))
    element.text = xml_text(text)
    ET.fromstring(ET.tostring(element, encoding="unicode").encode("utf-8"))


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())), st.text())
def test_unambiguous_never_shows_two_texts_alike(text, other):
    """one_line shows a real backslash before 'x0a' as it shows a line break; unambiguous does not
    (JUnit case names, which must stay unique)."""
    assert not any(_unsafe(ch) for ch in unambiguous(text))
    assert (unambiguous(text) == unambiguous(other)) == (text == other)
    assert unambiguous("dup\\x0aname") != unambiguous("dup\nname") == one_line("dup\nname")
    assert unambiguous(r"C:\data") == r"C:\\data" and unambiguous("hr.emp.ssn") == "hr.emp.ssn"


# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt) outside the categories below:
# rendered as nothing, so that two names differing by one of them look the same.
_DEFAULT_IGNORABLE = [
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
]


def _unsafe(ch: str) -> bool:
    """An independent statement of what must never be shown as is."""
    import unicodedata

    code = ord(ch)
    noncharacter = 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE
    return (
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
        or noncharacter
        or any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)
    )


def test_noncharacters_show_as_escapes_as_they_do_in_junit():
    # Found by a probe: U+FFFE and U+FFFF were escaped in JUnit (XML cannot carry them) and written
    # raw into the table, Markdown, diff text, report and email.
    name = "ctl\ufffe\uffff\ufdd0\ufdef\U0001fffe\U000effff end"
    shown = "ctl\\ufffe\\uffff\\ufdd0\\ufdef\\U0001fffe\\U000effff end"
    assert one_line(name) == visible(name) == shown
    assert xml_text("a\ufffe") == "a\\ufffe"
    assert one_line("\ufdcf\ufdf0\ufffd") == "\ufdcf\ufdf0\ufffd"  # neighbours, replacement char: kept


def test_names_that_differ_only_by_an_invisible_character_never_look_alike():
    # Seen in a report: 'em<soft hyphen>ail' and 'email' showed as the same column.
    plain = "pg.public.t.email"
    for hidden in ("\u00ad", "\u3164", "\u115f", "\u1160", "\uffa0", "\u180e", "\u034f", "\ufe0f", "\ue000"):
        variant = f"pg.public.t.em{hidden}ail"
        for show in (one_line, visible, unambiguous):
            assert show(variant) != show(plain), (hidden, show)
        code = ord(hidden)
        escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        assert one_line(variant) == f"pg.public.t.em{escape}ail"
    tagged = "email\U000e0041\U000e0042"  # tag characters: invisible, 5 hex digits
    assert one_line(tagged) == "email\\U000e0041\\U000e0042"


def test_fit_counts_terminal_columns_not_characters():
    assert [display_width(t) for t in ("abc", "顧客メール", "e\u0301")] == [3, 10, 1]
    assert fit("abc", 5) == "abc  "
    assert fit("abcdefgh", 5) == "abcd…"
    assert fit("顧客メール", 11) == "顧客メール "
    assert fit("顧客メール", 6) == "顧客… "  # a wide character never straddles the edge


@given(st.text(max_size=40), st.integers(1, 30))
def test_fit_always_takes_exactly_the_width(text, width):
    assert display_width(fit(one_line(text), width)) == width
