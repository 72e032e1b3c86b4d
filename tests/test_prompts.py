"""Prompt sets: the shipped files load with the documented sizes and splits; bad prompt files fail clearly."""

from __future__ import annotations

import pytest

from scaleup.prompts import SHIPPED, load_prompt_set, read_prompt_file
from scaleup.text_embeddings import load_occupations


@pytest.mark.parametrize("name, size", [("popalign-occupations", 100), ("laion-aesthetics", 100),
                                        ("personal-descriptors", 100), ("couples", 10),
                                        ("occupations-train", 120), ("occupations-test", 30),
                                        ("sports-train", 70), ("sports-test", 15)])
def test_shipped_sets_have_their_documented_sizes_and_no_duplicates(name, size):
    prompts = load_prompt_set(name).prompts
    assert len(prompts) == size
    assert len(set(prompts)) == size
    assert all(p == p.strip() and p and "  " not in p for p in prompts)


def test_occupation_split_partitions_the_occupation_list():
    prefix, suffix = "a photo of the face of a ", ", a person"
    train = {p[len(prefix):-len(suffix)] for p in load_prompt_set("occupations-train").prompts}
    test = {p[len(prefix):-len(suffix)] for p in load_prompt_set("occupations-test").prompts}
    assert not train & test
    assert train | test == set(load_occupations())


def test_sports_split_is_disjoint():
    train = set(load_prompt_set("sports-train").prompts)
    test = set(load_prompt_set("sports-test").prompts)
    assert not train & test and all(p.startswith("a person playing ") for p in train | test)


def test_every_shipped_name_loads():
    assert all(len(load_prompt_set(name)) > 0 for name in SHIPPED)


def test_user_file_with_template_and_comments(tmp_path):
    path = tmp_path / "jobs.txt"
    path.write_text("# my jobs\n\nbaker\n  welder  \n", encoding="utf-8")
    assert read_prompt_file(path, template="a photo of a {}").prompts == ("a photo of a baker", "a photo of a welder")


@pytest.mark.parametrize("content, message", [(b"", "holds no prompts"), (b"# only a comment\n\n", "holds no prompts"),
                                              (b"caf\xe9 owner\n", "not UTF-8"),
                                              (b"a nurse\na pi\x00lot\n", r"line 2: control character '\\x00'")])
def test_bad_prompt_files_fail_with_one_clear_error(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_prompt_set(path)


def test_missing_prompt_file_names_the_path_and_the_shipped_sets(tmp_path):
    with pytest.raises(ValueError, match=r"missing.*occupations-train"):
        load_prompt_set(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="is a folder"):
        load_prompt_set(tmp_path)


def test_template_needs_one_placeholder(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="placeholder"):
        read_prompt_file(path, template="no placeholder")


def test_prompts_longer_than_the_text_encoders_context_are_named(capsys):
    from transformers import CLIPTokenizer

    from scaleup.prompts import prompts_cut, warn_prompts_cut
    from scaleup.testbed.paths import testbed_path

    tokenizer = CLIPTokenizer.from_pretrained(str(testbed_path() / "tokenizer"), local_files_only=True)
    context = tokenizer.model_max_length
    short = "a handwritten zero"
    long = " ".join(["a handwritten zero"] * context)
    cut = prompts_cut(tokenizer, [short, long, long])
    n = len(tokenizer(long, verbose=False).input_ids)
    assert cut == [{"prompt": long, "tokens": n, "context": context}] and n > context
    # independently: exactly the prompts whose truncated ids differ from their whole ids
    for prompt in (short, long):
        whole = tokenizer(prompt, verbose=False).input_ids
        assert (tokenizer(prompt, truncation=True, max_length=context).input_ids != whole) == (prompt == long)
    k = len(tokenizer(short).input_ids)
    assert prompts_cut(tokenizer, [short], reserved=context - k) == []
    assert prompts_cut(tokenizer, [short], reserved=context - k + 1)[0]["context"] == k - 1  # a soft prompt's room
    warn_prompts_cut(cut, job="scaleup.jobs.adft")
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaleup.jobs.adft: warning: prompt 'a handwritten zero a handwritten zero") and \
        f"has {n} tokens but the text encoder reads {context}; the rest is cut" in err and "\n" not in err
