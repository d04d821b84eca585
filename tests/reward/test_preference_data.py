"""Preference readers, the split by prompt, and the long-input policy."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from contrastlib.cli.main import main
from contrastlib.config.load import BUNDLED_DATA_DIR
from contrastlib.data.preference import read_preferences, split_dialogue
from contrastlib.data.prompt_split import split_by_prompt
from contrastlib.data.windows import WindowPolicy, join
from contrastlib.errors import DataError

HH_SAMPLE = BUNDLED_DATA_DIR / "hh-rlhf" / "helpful-base-800.jsonl.gz"


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_format_reads(tmp_path: Path) -> None:
    hh = read_preferences(_write(tmp_path / "hh.jsonl", [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}]))
    assert hh.kind == "pairs" and hh.rows[0].prompt == "\n\nHuman: hi\n\nAssistant:"
    assert hh.rows[0].responses == ("hello!", "go away")
    pairs = read_preferences(_write(tmp_path / "p.jsonl", [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 0.5, "subset": "s1"}]))
    assert pairs.rows[0].margin == 0.5 and pairs.subsets == ["s1"]
    users = read_preferences(_write(tmp_path / "u.jsonl", [
        {"user": 7, "prompt": "q", "chosen": "a", "rejected": "b"}]))
    assert users.users == ["7"]
    lists = read_preferences(_write(tmp_path / "l.jsonl", [
        {"prompt": "q", "responses": ["a", "b", "c"], "scores": [1, 3, 2]}]))
    assert lists.kind == "lists" and lists.rows[0].scores == (1.0, 3.0, 2.0)
    unpaired = read_preferences(_write(tmp_path / "n.jsonl", [
        {"prompt": "q", "response": "a", "label": True}, {"prompt": "q", "response": "b", "label": 0}]))
    assert unpaired.kind == "unpaired" and [r.scores for r in unpaired.rows] == [(1.0,), (0.0,)]


def test_a_directory_reads_every_file_with_its_folder_as_subset(tmp_path: Path) -> None:
    for name in ("helpful", "harmless"):
        (tmp_path / name).mkdir()
        with gzip.open(tmp_path / name / "test.jsonl.gz", "wt") as f:
            f.write(json.dumps({"chosen": f"\n\nHuman: {name}\n\nAssistant: yes",
                                "rejected": f"\n\nHuman: {name}\n\nAssistant: no"}) + "\n")
    prefs = read_preferences(tmp_path)
    assert prefs.subsets == ["harmless", "helpful"] and len(prefs) == 2


BAD = [
    ({"prompt": "q", "rejected": "b"}, "cannot tell the format"),
    ({"prompt": "q", "chosen": None, "rejected": "b"}, "missing 'chosen'"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "chosen is identical to rejected"),
    ({"prompt": "q", "responses": ["a", "b"], "scores": [1, "high"]}, "'score' must be a number"),
    ({"prompt": "q", "responses": ["a", "b"], "scores": [1, float("nan")]}, "must be finite"),
    ({"chosen": "\n\nHuman: hi there", "rejected": "\n\nHuman: hi again"}, "no assistant turn"),
    ({"prompt": "q", "response": "a", "label": "maybe"}, "'label' must be"),
]


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_rows_name_file_and_line_and_exit_2_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: dict[str, object], message: str
) -> None:
    good = {"prompt": "q", "chosen": "a", "rejected": "b"} if "chosen" in bad or "rejected" in bad else bad
    if "responses" in bad:
        good = {"prompt": "q", "responses": ["a", "b"], "scores": [1, 2]}
    if "response" in bad:
        good = {"prompt": "q", "response": "a", "label": 1}
    if "prompt" not in bad:
        good = {"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: x\n\nAssistant: b"}
    text = json.dumps(good) + "\n" + json.dumps(bad, allow_nan=True) + "\n"
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    first_line_bad = message == "cannot tell the format"
    line = 2
    if first_line_bad:
        path.write_text(json.dumps(bad) + "\n")
        line = 1
    with pytest.raises(DataError, match=message) as info:
        read_preferences(path)
    assert info.value.line == line and info.value.path == str(path)
    # the CLI reads the data before loading any model: one line, exit code 2
    code = main(["eval", "reward", "--model", str(tmp_path / "no-model"), "--data", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and f"{path}:{line}" in err and message.split("'")[0] in err


def test_skip_counts_bad_rows_by_reason(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "same", "rejected": "same"},
        {"prompt": "q3", "chosen": "", "rejected": "b"},
        {"prompt": "q4", "chosen": "same", "rejected": "same"},
    ])
    prefs = read_preferences(path, on_bad_row="skip")
    assert len(prefs) == 1
    assert dict(prefs.skipped) == {"chosen is identical to rejected": 2, "a response is empty": 1}


def test_hh_split_falls_back_to_the_last_shared_assistant_turn() -> None:
    chosen = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d"
    rejected = "\n\nHuman: a\n\nAssistant: b\n\nHuman: C!\n\nAssistant: e"
    prompt, c, r = split_dialogue(chosen, rejected)
    assert prompt == "\n\nHuman: a\n\nAssistant:"
    assert c.startswith("b\n\nHuman: c") and r.startswith("b\n\nHuman: C!")


def test_split_by_prompt_never_puts_a_prompt_on_both_sides() -> None:
    prefs = read_preferences(HH_SAMPLE, on_bad_row="skip")
    train, test = split_by_prompt(prefs.rows, 0.2)
    assert not {r.prompt for r in train} & {r.prompt for r in test}
    assert 0.1 < len(test) / len(prefs) < 0.3
    again = split_by_prompt(list(reversed(prefs.rows)), 0.2)[1]
    assert {r.where for r in again} == {r.where for r in test}  # order does not matter
    other = split_by_prompt(prefs.rows, 0.2, salt="x")[1]
    assert {r.where for r in other} != {r.where for r in test}


@pytest.fixture(scope="module")
def tokenizer() -> object:
    from transformers import AutoTokenizer

    from contrastlib.encoders.text import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))


def test_default_policy_keeps_the_final_reply_of_long_dialogues(tokenizer: object) -> None:
    """HH-RLHF dialogues differ only in the final reply; truncating from the end cuts it
    off and makes chosen and rejected identical. The default keeps it."""
    tok: object = tokenizer
    window = 128
    prefs = read_preferences(HH_SAMPLE, on_bad_row="skip")
    policy = WindowPolicy(tok, window)
    long_rows = [r for r in prefs.rows if len(tok(join(r.prompt, r.responses[0]))["input_ids"]) > window  # type: ignore[operator]
                 and len(tok(r.responses[0])["input_ids"]) < window // 2 and len(tok(r.responses[1])["input_ids"]) < window // 2]  # type: ignore[operator]
    assert len(long_rows) > 50
    identical_from_end = 0
    for r in long_rows:
        chosen, rejected = (policy.fit(r.prompt, x) for x in r.responses)
        assert chosen is not None and rejected is not None
        assert chosen.endswith(r.responses[0]) and rejected.endswith(r.responses[1])
        assert chosen != rejected
        for text in (chosen, rejected):
            assert len(tok(text)["input_ids"]) <= window  # type: ignore[operator]
        a, b = (tok(join(r.prompt, x), truncation=True, max_length=window)["input_ids"] for x in r.responses)  # type: ignore[operator]
        identical_from_end += a == b
    assert identical_from_end > 0.5 * len(long_rows)  # what the default avoids
    assert policy.report.context_cut >= len(long_rows)
    assert policy.report.context_cut + policy.report.fit == 2 * len(long_rows)


def test_drop_raise_and_a_reply_longer_than_the_window(tokenizer: object) -> None:
    prompt, reply = "Human: " + "tell me more " * 100 + "\n\nAssistant:", "Sure."
    assert WindowPolicy(tokenizer, 32, "drop").fit(prompt, reply) is None
    with pytest.raises(DataError, match="tokens, longer than"):
        WindowPolicy(tokenizer, 32, "raise").fit(prompt, reply, where="f.jsonl:3")
    policy = WindowPolicy(tokenizer, 16)
    out = policy.fit("Human: hi\n\nAssistant:", "word " * 50)
    assert out is not None and out.startswith("word") and policy.report.reply_cut == 1


def test_mark_reply_puts_the_pool_mark_at_the_reply_and_changes_nothing_else(tokenizer: object) -> None:
    """``method.pool: reply``: the fitted text is the same, with the pool mark where the
    final reply starts; after a context cut too; at the start when the reply itself was
    cut; a mark in the input is cleaned out, not trusted."""
    from contrastlib.utils.marks import POOL_MARK, split_pool_mark

    cases = [
        ("Human: hi\n\nAssistant:", "Hello there!"),  # fits
        ("Human: " + "tell me more " * 40 + "\n\nAssistant:", "Sure, here it is."),  # context cut
        ("", "Just a reply."),  # no prompt
    ]
    for prompt, reply in cases:
        plain = WindowPolicy(tokenizer, 32).fit(prompt, reply)
        marked = WindowPolicy(tokenizer, 32, mark_reply=True).fit(prompt, reply)
        assert plain is not None and marked is not None
        text, start = split_pool_mark(marked)
        assert text == plain and marked.count(POOL_MARK) == 1
        assert text[start:] == reply
    cut = WindowPolicy(tokenizer, 16, mark_reply=True).fit("Human: hi\n\nAssistant:", "word " * 50)
    assert cut is not None and cut.startswith(POOL_MARK + "word")
    dirty = WindowPolicy(tokenizer, 32, mark_reply=True).fit(f"Human: a{POOL_MARK}b\n\nAssistant:", f"c{POOL_MARK}d")
    assert dirty is not None and dirty.count(POOL_MARK) == 1 and split_pool_mark(dirty)[0].endswith(": cd")


def _rated(tmp_path: Path, n: int = 60) -> Path:
    """Lists scored per objective: 'polite' prefers the reply with 'please', 'brief' the shorter one."""
    rows = []
    for i in range(n):
        long = f"Here is a long and detailed answer number {i} about topic {i % 7}, with many more words in it."
        short = f"Answer {i}, please."
        rows.append({"prompt": f"Question {i} about topic {i % 7}?", "responses": [long, short],
                     "scores": {"polite": [0, 1], "brief": [0, 2]} if i % 2 else {"polite": [1, 0], "brief": [0, 1]}})
    return _write(tmp_path / "rated.jsonl", rows)


def test_lists_scored_per_objective_read_and_expand_to_tagged_pairs(tmp_path: Path) -> None:
    from contrastlib.data.preference import expand_pairs

    prefs = read_preferences(_write(tmp_path / "r.jsonl", [
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": {"help": [3, 1, 2], "safe": [1, 1, 0]}},
    ]))
    assert prefs.kind == "lists" and prefs.per_objective and prefs.objectives == ["help", "safe"]
    pairs = [(r.objective, r.responses) for r in expand_pairs(prefs.rows)]
    assert pairs == [("help", ("a", "c")), ("help", ("a", "b")), ("help", ("c", "b")),
                     ("safe", ("a", "c")), ("safe", ("b", "c"))]
    bad = [
        ({"prompt": "p", "responses": ["a", "b"], "scores": {"help": [1]}}, "scores.help"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": {"help": [1, None]}}, "scores.help"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": {"help": [1, "x"]}}, "scores.help"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": {"help": [1, 1], "safe": [0, 0]}}, "same score"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": {}}, "no objective"),
    ]
    for row, needle in bad:
        with pytest.raises(DataError, match=needle) as info:
            read_preferences(_write(tmp_path / "bad.jsonl", [row]))
        assert "bad.jsonl" in str(info.value) and ":1" in str(info.value)


def test_multi_objective_fit_on_rated_lists_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            tiny_model: str) -> None:
    """The objectives come from the data; each is judged by its own component on the
    held-out pairs; a scalar head, or objectives that miss one, is a one-line error."""
    data = _rated(tmp_path)
    common = [f"data.train={data}", "method.head.name=multi_objective", "model.max_seq_length=48", f"model.name={tiny_model}",
              "trainer.enable_progress_bar=false", "eval.batch_size=64", "method.heldout_fraction=0.3"]
    out = tmp_path / "runs"
    assert main(["fit", "reward-hh", f"output_dir={out}", "trainer.max_epochs=20", "optim.lr=0.01", *common]) == 0
    spec = json.loads((out / "reward-hh" / "model" / "reward_head.json").read_text())
    assert spec["head"] == "multi_objective"
    assert json.dumps(spec).count("polite") and json.dumps(spec).count("brief")
    after = json.loads((out / "reward-hh" / "metrics.json").read_text())["after"]["heldout"]
    # 'brief' always prefers the short reply: a component learns that from 20 epochs
    assert after["acc/objective/brief"] == 1.0, after
    assert "acc/objective/polite" in after
    capsys.readouterr()
    assert main(["eval", "reward", "--model", str(out / "reward-hh"), "--data", str(data), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["acc/objective/brief"] == 1.0 and payload["pairs"] == 120  # 60 lists x 2 objectives
    assert main(["fit", "reward-hh", *[c for c in common if "head.name" not in c], "--dry-run"]) == 2
    assert "multi_objective" in capsys.readouterr().err
    assert main(["fit", "reward-hh", *common, "method.head.objectives=[polite]", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "method.head.objectives" in err and "brief" in err
