"""Text-shape signals of issue 17 item 5 and the poison bait: laid-out text is not token soup, a shared
boilerplate opening is not a question bait."""

from __future__ import annotations

from detectors.textsignals import question_sentences, question_shaped, token_soup, words

SOUP = "bobcat ##ivity roster)( olympics lanes tallest sprinter wiki ##bolt fastest humans 100m dash"
TABLE = (
    "|  |  | Years Ended September 30, |  |\n"
    "|  | 2019 | 2018 | 2017 |\n"
    "| Fixed Price | $  1,452.4 | $  1,146.2 | $  1,036.9 |\n"
    "| Other | 44.1 | 56.7 | 70.8 |\n"
    "| Total sales | $1,496.5 | $1,202.9 | $1,107.7 |"
)
LIST = (
    "- 2 cups flour\n- 1 tsp baking soda\n- 3 ripe bananas, mashed\n- 1/2 cup (113g) butter\n"
    "1. Preheat the oven to 175C.\n2) Mix everything and bake 60 min."
)


def test_tables_and_lists_are_structure_not_soup() -> None:
    assert token_soup(SOUP) >= 0.5
    assert token_soup(TABLE) == 0.0 and token_soup(LIST) == 0.0
    # a table with a prose note is judged on the note; soup hidden between table rows is still soup
    prose = "The table below presents total net sales disaggregated by contract type for the three years."
    assert token_soup(TABLE + "\n" + prose) < 0.5
    assert token_soup(TABLE + "\n" + SOUP) >= 0.5


def test_a_table_s_title_is_a_heading_not_prose() -> None:
    """A title line set apart by a blank line is a noun phrase: judged as prose it looked like soup (0.65 for a
    GOV.UK budget table's "Table A.2: Illustrative gross financing requirement (£ billion)")."""
    title = "Table 4.1: Estimated quarterly contract sales (£ million)\n\n"
    assert token_soup(title + TABLE) == 0.0
    assert token_soup(title + TABLE + "\n" + SOUP) >= 0.5  # the soup line is still read
    assert token_soup(title.rstrip() + "\n" + TABLE) >= 0.5  # without its blank line it is read as prose


def test_aligned_columns_and_short_fields_are_layout_too() -> None:
    columns = ("Prices per bushel, in U.S. dollars, for the grades quoted at each market this week.\n"
               "     WHEAT     HRW   HRS    SRW   SWW\n Chicago       --    3.04   2.98  --\n"
               " Toledo        --    3.04   2.98  2.90\n Memphis       --    --     3.05  --")
    brief = "Shr 2.10 dlrs vs 1.72 dlrs\n    Net 2,228,000 vs 1,730,000\n    Pay April 10\n    Record March 27"
    assert token_soup(columns) < 0.5 and token_soup(brief) < 0.5
    assert token_soup(SOUP.replace(" ", "  ")) >= 0.5  # one line of tokens, however spaced, is no layout


def test_numbers_are_words_not_fragments() -> None:
    money = "Revenue rose to $1,496.5 million (up 24.4%) from $1,202.9 million in 2018, and margins to (12.3) points."
    assert token_soup(money) < 0.3


def test_a_bait_opens_like_a_question_and_boilerplate_does_not() -> None:
    assert question_shaped(words("Who was the writer of These Boots Are Made for Walkin"))
    assert question_shaped(words("In which year did the Berlin Wall fall"))
    assert not question_shaped(words("This file may not be suitable for users of assistive technology"))
    assert not question_shaped(words("We present here initial work on analyzing the volume of research in NLP"))
    assert question_sentences("Intro. What is the capital city of Australia? Canberra is.") == [
        "what is the capital city of australia"
    ]
