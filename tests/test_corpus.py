"""The Deal-or-No-Deal parser, dialogue replay, coverage report and the synthetic corpus."""

from __future__ import annotations

import pytest

from parley.agents.partners.synthetic import synthetic_corpus
from parley.envs.corpus import (
    ParsedAct,
    corpus_dataset,
    coverage_report,
    dialogue_to_game,
    load_corpus,
    parse_raw_line,
    parse_tagged_line,
    parse_utterance,
    split_by_scenario,
)
from parley.envs.negotiation import encode_act

# (utterance, item counts (books, hats, balls), expected act or None)
HAND_WRITTEN = [
    ("i would like 4 hats and you can have the rest .", (1, 4, 1), ParsedAct("propose", (0, 4, 0))),
    ("you can have all the hats if i get the book and basketballs .", (1, 3, 2), ParsedAct("propose", (1, 0, 2))),
    ("i'll take the hats and two books and you can have the ball and two books .", (4, 1, 1),
     ParsedAct("propose", (2, 1, 0))),
    ("how about i get the ball and the hat and you get all the books", (3, 1, 1), ParsedAct("propose", (0, 1, 1))),
    ("2 hats and book for me , rest for you", (1, 3, 2), ParsedAct("propose", (1, 2, 0))),
    ("i need the ball", (2, 2, 1), ParsedAct("propose", (0, 0, 1))),
    ("i can give you one book", (3, 1, 1), ParsedAct("propose", (2, 1, 1))),
    ("i'll take one of each .", (2, 2, 2), ParsedAct("propose", (1, 1, 1))),
    ("take the book , i'll take 3 balls", (1, 2, 3), ParsedAct("propose", (0, 0, 3))),  # unnamed hats: partner
    ("you can have everything but the ball", (2, 2, 1), ParsedAct("propose", (0, 0, 1))),
    ("i want the books . that's my final offer", (3, 1, 1), ParsedAct("insist", (3, 0, 0))),
    ("i need the hats or no deal", (1, 2, 3), ParsedAct("insist", (0, 2, 0))),
    ("deal", (1, 1, 3), ParsedAct("agree")),
    ("okay that works for me . thank you !", (1, 1, 3), ParsedAct("agree")),
    ("no deal", (1, 1, 3), ParsedAct("walk_away")),
    # rejections that open a sentence do not negate the offer after them
    ("no i need both hats and both books", (2, 2, 1), ParsedAct("propose", (2, 2, 0))),
    ("that won't work for me . one book and one ball .", (1, 4, 2), ParsedAct("propose", (1, 0, 1))),
    ("sorry i cant do that i need the book and balls", (1, 2, 3), ParsedAct("propose", (1, 0, 3))),
    # negated demands claim the item; "don't need" leaves it to the partner
    ("i can't give up the ball", (1, 1, 3), ParsedAct("propose", (0, 0, 1))),
    ("i can't make a deal without the hat", (2, 1, 2), ParsedAct("propose", (0, 1, 0))),
    ("i don't need the book", (1, 2, 2), ParsedAct("propose", (0, 2, 2))),
    # uncued items beside a claim of the rest go to the other side; "no hats" is zero hats
    ("1 hat 1 ball and i keep the rest", (1, 2, 4), ParsedAct("propose", (1, 1, 3))),
    ("i get 1 book no hats and 1 ball", (1, 4, 1), ParsedAct("propose", (1, 0, 1))),
    ("2 books and 1 hat is my final offer", (2, 1, 2), ParsedAct("insist", (2, 1, 0))),
    ("value talk aside , you can have the balls , the others are worth 2 each to me", (4, 1, 2),
     ParsedAct("propose", (4, 1, 0))),
    # agreement in other words, or in the last clause after a grumble; saying no deal can be made
    ("i can live with that", (1, 2, 2), ParsedAct("agree")),
    ("that's not great for me , but i guess i accept .", (1, 2, 2), ParsedAct("agree")),
    ("i don't think we can make a deal", (1, 2, 2), ParsedAct("walk_away")),
    # refusing to give an item up claims it, in more wordings; a reason after "because" is its own clause
    ("i cannot give up the ball because it is too valuable to me", (2, 2, 1), ParsedAct("propose", (0, 0, 1))),
    ("i can't give you the book , but you can have the hat as long as i can have the balls .", (1, 1, 3),
     ParsedAct("propose", (1, 0, 3))),
    ("i'm not budging on the ball , you can have everything else .", (1, 3, 1), ParsedAct("propose", (0, 0, 1))),
    ("i don't really want to give up the book", (1, 2, 2), ParsedAct("propose", (1, 0, 0))),
    ("there wont be a deal without the ball", (2, 2, 1), ParsedAct("propose", (0, 0, 1))),
    ("i cant use the books", (2, 2, 1), ParsedAct("propose", (0, 2, 1))),
    ("i'd like all of the hat's you can have the rest", (1, 2, 2), ParsedAct("propose", (0, 2, 0))),
    # of two offers joined by ", or" the first is read
    ("i'd prefer the hats and one book , or i'll take 2 hats and both books", (2, 3, 2),
     ParsedAct("propose", (1, 3, 0))),
    # thanks on its own, more agreement words, and an agreeing sentence beside a remark
    ("thank you !", (1, 1, 3), ParsedAct("agree")),
    ("thx", (1, 1, 3), ParsedAct("agree")),
    ("that sounds like a plan .", (2, 2, 1), ParsedAct("agree")),
    ("okie dokie", (1, 3, 1), ParsedAct("agree")),
    ("that'll work . i don't want you to get shafted or anything .", (1, 4, 1), ParsedAct("agree")),
    ("ok . no", (1, 4, 1), None),
    ("thanks . what do you want ?", (1, 4, 1), None),
    # no deal can be reached
    ("then i guess we don't have a deal", (1, 2, 2), ParsedAct("walk_away")),
    ("then it seems we have reached an impasse .", (4, 1, 1), ParsedAct("walk_away")),
    ("sorry we couldn't agree", (4, 1, 1), ParsedAct("walk_away")),
    ("ok , we'll just not make a deal then", (4, 1, 1), ParsedAct("walk_away")),
    # value talk, bare rejections, questions and greetings are not guessed
    ("the hat is worth more to me than the ball or book .", (1, 1, 3), None),
    ("no", (1, 1, 3), None),
    ("what would you like ?", (1, 1, 3), None),
    ("hi there", (1, 1, 3), None),
    ("i said no", (1, 1, 3), None),
    # claims that cannot be a split of these items
    ("i want 4 hats", (1, 2, 3), None),
    ("i get one book and you get one book", (3, 1, 1), None),
]


@pytest.mark.parametrize("text,counts,expected", HAND_WRITTEN)
def test_parser_on_hand_written_utterances(text, counts, expected):
    assert parse_utterance(text, counts) == expected


def test_parser_rejects_bad_counts():
    with pytest.raises(ValueError, match="3 item counts"):
        parse_utterance("deal", (1, 2))


RAW = ("1 0 4 2 1 2 YOU: i would like 4 hats and you can have the rest . <eos> THEM: deal <eos> "
       "YOU: <selection> item0=0 item1=4 item2=0 <eos> reward=8 agree 1 4 4 1 1 2")
RAW_OTHER_SIDE = ("1 4 4 1 1 2 THEM: i would like 4 hats and you can have the rest . <eos> YOU: deal <eos> "
                  "THEM: <selection> item0=1 item1=0 item2=1 <eos> reward=6 agree 1 0 4 2 1 2")
RAW_UNREAD = ("1 4 4 1 1 2 YOU: hello friend <eos> THEM: i need the hats <eos> YOU: deal <eos> "
              "THEM: <selection> item0=1 item1=0 item2=1 <eos> reward=6 agree 1 0 4 2 1 2")
TAGGED = ("<input> 3 1 1 5 1 2 </input> <dialogue> YOU: i want the books <eos> THEM: no deal <eos> "
          "YOU: <selection> </dialogue> <output> <no_agreement> <no_agreement> <no_agreement> <no_agreement> "
          "<no_agreement> <no_agreement> </output> <partner_input> 3 0 1 4 1 6 </partner_input>")


def test_raw_line_replays_to_a_deal_matching_the_selection():
    d = parse_raw_line(RAW)
    assert d.context.counts == (1, 4, 1) and d.context.values == ((0, 2, 2), (4, 1, 2))
    assert d.outcome == "agree" and d.selection == (0, 4, 0)
    for u in d.utterances:
        u.act = parse_utterance(u.text, d.context.counts)
    game = dialogue_to_game(d)
    assert game.complete
    assert game.actions == [encode_act("propose", (0, 4, 0)), encode_act("agree")]


def test_tagged_line_no_agreement_closes_with_walk_away_already_sent():
    d = parse_tagged_line(TAGGED)
    assert d.outcome == "no_agreement" and d.selection is None
    for u in d.utterances:
        u.act = parse_utterance(u.text, d.context.counts)
    game = dialogue_to_game(d)
    assert game.actions == [encode_act("propose", (3, 0, 0)), encode_act("walk_away")]


def test_unparseable_utterance_ends_the_usable_prefix():
    d = parse_raw_line(RAW_UNREAD)
    for u in d.utterances:
        u.act = parse_utterance(u.text, d.context.counts)
    game = dialogue_to_game(d)
    assert not game.complete and game.actions == []  # nothing after an unread turn is used


def test_load_corpus_keeps_one_copy_and_excludes_the_heldout_split(tmp_path):
    (tmp_path / "data.txt").write_text("\n".join([RAW, RAW_OTHER_SIDE, RAW_UNREAD]) + "\n")
    assert len(load_corpus(tmp_path / "data.txt")) == 2  # RAW_OTHER_SIDE is RAW seen from THEM
    heldout = ("<input> 1 0 4 2 1 2 </input> <dialogue> YOU: i would like 4 hats and you can have the rest . <eos> "
               "THEM: deal <eos> YOU: <selection> </dialogue> <output> item0=0 item1=4 item2=0 item0=1 item1=0 "
               "item2=1 </output> <partner_input> 1 4 4 1 1 2 </partner_input>")
    (tmp_path / "test.txt").write_text(heldout + "\n")
    kept = load_corpus(tmp_path)
    assert len(kept) == 1 and kept[0].utterances[0].text == "hello friend"
    assert len(load_corpus(tmp_path, exclude_heldout=False)) == 2


def test_coverage_report_counts(tmp_path):
    (tmp_path / "data.txt").write_text("\n".join([RAW, RAW_UNREAD]) + "\n")
    report = coverage_report(load_corpus(tmp_path / "data.txt"))
    assert (report.dialogues, report.utterances, report.parsed, report.unparseable) == (2, 5, 4, 1)
    assert report.dialogues_fully_parsed == 1
    # RAW: last proposal (0, 4, 0) = selection; RAW_UNREAD: "i need the hats" by THEM -> YOU keep (1, 0, 1)
    assert (report.deals_with_proposal, report.last_proposal_matches_selection) == (2, 2)
    assert report.training_acts == 2
    assert "unparseable" in str(report)


def test_synthetic_corpus_round_trips_through_the_parser():
    dialogues = synthetic_corpus(120, seed=3)
    assert len(dialogues) == 120
    for d in dialogues:
        for u in d.utterances:
            assert parse_utterance(u.text, d.context.counts) == u.act
    report = coverage_report(dialogues)
    assert report.share_parsed == 1.0 and report.selection_agreement == 1.0
    data = corpus_dataset(dialogues)
    assert len(data) == sum(len(d.utterances) for d in dialogues)
    assert data.masks[range(len(data)), data.actions].all()


def test_split_by_scenario_is_disjoint():
    dialogues = synthetic_corpus(200, seed=1)
    a, b = split_by_scenario(dialogues, [0.6, 0.4], seed=0)
    assert len(a) + len(b) == 200 and a and b

    def key(d):
        return (d.context.counts, tuple(sorted(d.context.values)))

    assert not {key(d) for d in a} & {key(d) for d in b}


def test_parser_coverage_on_the_corpus(corpus_dir):
    if corpus_dir is None:
        pytest.skip("the Deal-or-No-Deal corpus is not on this machine")
    report = coverage_report(load_corpus(corpus_dir / "val.txt"))
    assert report.dialogues > 400
    assert report.share_parsed > 0.75
    assert report.selection_agreement > 0.7
