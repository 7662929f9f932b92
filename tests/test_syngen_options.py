"""The study's SynGen and W_s options: each changes what it should and nothing else."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from fedpit.adapters import LOCAL, PUBLIC, get_state
from fedpit.data.example import Example
from fedpit.fed import client as client_mod
from fedpit.fed.client import RoundInfo, ifs_scores, run_client_round
from fedpit.lm.batching import IGNORE_INDEX, collate, encode_pair, per_example_nll
from fedpit.lm.distill import teacher_targets, top_k_distribution
from fedpit.lm.generation import Generation, GenerationSpec
from fedpit.lm.scoring import response_nll
from fedpit.model.prompts import make_prompt_format
from fedpit.synth.pipeline import SynthResult, SynthSettings, generate_synthetic
from tests.helpers import examples, tiny_runtime
from tests.test_client import start_state, tiny_cfg

LONG = " ".join(f"word{i}" for i in range(80))
CANDIDATES = [
    Example(f"syn-{i}", f"What causes condition {i} ?", "", text, {"synthetic": "true"})
    for i, text in enumerate(["Condition 0 is caused by a gene.", LONG, "It is viral, 2."])
]


@pytest.fixture
def scripted(monkeypatch):
    """SynGen replaced by three fixed candidates, with a teacher prompt each."""

    def fake(rt, cfg, info, private, adapter):
        prompts = {c.id: f"Demo: {private[0].output}\n{rt.fmt.prompt(c)}" for c in CANDIDATES}
        return SynthResult(list(CANDIDATES), attempts=3, prompts=prompts)

    monkeypatch.setattr(client_mod, "synthesize", fake)


def _round(tiny_model_dir, tmp_path, name, **keys):
    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"fed.beta": 0.5, **keys})
    g = start_state(rt)
    run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), examples(4), g, tmp_path / name)
    return get_state(rt.model, LOCAL), get_state(rt.model, PUBLIC), tmp_path / name


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# --- sampling: top-p reaches the generator, only when sampling -------------------------


def test_top_p_is_passed_to_both_phases_and_nothing_else_changes():
    seen: list[GenerationSpec] = []

    def fake_generate(prompts, spec):
        seen.append(spec)
        if spec.stop == ("\n",):
            return [Generation("a new disease ?", True) for _ in prompts]
        return [Generation("It is caused by many things in the body.", True) for _ in prompts]

    fmt = make_prompt_format("alpaca", None)
    base = SynthSettings(attempts=2, do_sample=True, temperature=1.0)
    nucleus = dataclasses.replace(base, top_p=0.9)
    for settings in (base, nucleus):
        generate_synthetic(examples(4), fake_generate, fmt, settings, random.Random(0))
    first, second = seen[: len(seen) // 2], seen[len(seen) // 2 :]
    assert {s.top_p for s in first} == {1.0} and {s.top_p for s in second} == {0.9}
    for a, b in zip(first, second, strict=True):
        assert dataclasses.replace(a, top_p=0.9) == b


def test_top_p_is_validated():
    with pytest.raises(Exception, match=r"top-p"):
        SynthSettings(top_p=0.0)


# --- IFS on the same response tokens ---------------------------------------------------


def test_ifs_scores_l_y_on_the_tokens_l_y_given_x_scores(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"model.max-length": 48})
    long = CANDIDATES[1]
    prompt = rt.fmt.prompt(long)
    cond_tokens = encode_pair(rt.tokenizer, prompt, long.output, 48).num_target_tokens
    whole = encode_pair(rt.tokenizer, rt.fmt.response_header(), long.output, 48)
    assert cond_tokens < whole.num_target_tokens  # the bias: L(y) saw more of the response
    rt.model.set_adapter(PUBLIC)
    cond = response_nll(rt.model, rt.tokenizer, [prompt], [long.output], 48)[0]
    header = rt.fmt.response_header()
    capped = response_nll(
        rt.model, rt.tokenizer, [header], [long.output], 48, max_response=[cond_tokens]
    )[0]
    uncapped = response_nll(rt.model, rt.tokenizer, [header], [long.output], 48)[0]
    aligned = ifs_scores(rt, cfg, PUBLIC, [long])[0]
    legacy = ifs_scores(
        rt, tiny_cfg(**{"model.max-length": 48, "synth.ifs-same-tokens": False}), PUBLIC, [long]
    )[0]
    assert aligned == pytest.approx(cond / capped)
    assert legacy == pytest.approx(cond / uncapped)
    assert aligned != pytest.approx(legacy)
    # With room for the whole response in both, the option changes nothing.
    roomy, short = {"model.max-length": 512}, [CANDIDATES[0]]
    assert ifs_scores(rt, tiny_cfg(**roomy), PUBLIC, short) == pytest.approx(
        ifs_scores(rt, tiny_cfg(**roomy, **{"synth.ifs-same-tokens": False}), PUBLIC, short),
        abs=1e-9,
    )


# --- random selection vs IFS -----------------------------------------------------------


def test_random_selection_keeps_m_reproducibly_and_leaves_w_l_alone(
    tiny_model_dir, tmp_path, scripted
):
    ifs_l, _, ifs_dir = _round(tiny_model_dir, tmp_path, "ifs", **{"synth.selection": "ifs"})
    rnd_l, rnd_s, rnd_dir = _round(
        tiny_model_dir, tmp_path, "random", **{"synth.selection": "random"}
    )
    _, again_s, _ = _round(tiny_model_dir, tmp_path, "again", **{"synth.selection": "random"})
    assert _same(ifs_l, rnd_l)  # W_l is trained before selection: untouched by it
    assert _same(rnd_s, again_s)  # the same seed picks the same M

    def chosen(d):
        import json

        rows = [
            json.loads(x) for x in (d / "synthetic" / "round-001.jsonl").read_text().splitlines()
        ]
        return {r["id"] for r in rows if r["selected"]}, {r["id"]: r["ifs"] for r in rows}

    ifs_ids, scores = chosen(ifs_dir)
    rnd_ids, rnd_scores = chosen(rnd_dir)
    assert len(ifs_ids) == len(rnd_ids) == 2
    assert ifs_ids == set(sorted(scores, key=scores.get)[:2])  # the lowest IFS
    assert set(rnd_scores.values()) == {None}  # random: no scoring pass, no score logged
    _, _, logged_dir = _round(
        tiny_model_dir,
        tmp_path,
        "logged",
        **{"synth.selection": "random", "synth.score-random": True},
    )
    logged_ids, logged = chosen(logged_dir)
    assert logged == pytest.approx(scores) and logged_ids == rnd_ids  # scored, same picks
    picks = random.Random(client_mod.phase_seed(RoundInfo(0, 1, 2, 0), "select")).sample(
        range(3), 2
    )
    assert rnd_ids == {CANDIDATES[i].id for i in picks}
    with pytest.raises(Exception, match=r"synth\.selection"):
        tiny_cfg(**{"synth.selection": "best"})


# --- W_s learning rate and epochs ------------------------------------------------------


@pytest.mark.parametrize("key", ["train.public-lr", "train.public-epochs"])
def test_public_lr_and_epochs_change_w_s_only(tiny_model_dir, tmp_path, scripted, key):
    value = 0.2 if key == "train.public-lr" else 3
    base_l, base_s, _ = _round(tiny_model_dir, tmp_path, "base")
    new_l, new_s, _ = _round(tiny_model_dir, tmp_path, key, **{key: value})
    assert _same(base_l, new_l)
    assert not _same(base_s, new_s)


def test_public_lr_equal_to_train_lr_is_the_default(tiny_model_dir, tmp_path, scripted):
    _, base_s, _ = _round(tiny_model_dir, tmp_path, "base")
    _, same_s, _ = _round(tiny_model_dir, tmp_path, "same", **{"train.public-lr": 5e-2})
    assert _same(base_s, same_s)


# --- soft-label context distillation ---------------------------------------------------


def test_soft_labels_that_are_one_hot_give_the_hard_loss(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    enc = [encode_pair(rt.tokenizer, "Q: why?\nA:", " Because of genes and diet.", 64)]
    hard = collate(enc, rt.tokenizer.pad_token_id)
    ids = torch.tensor(enc[0].response_ids).unsqueeze(1)
    soft = collate(
        [dataclasses.replace(enc[0], soft_ids=ids, soft_probs=torch.ones(ids.shape))],
        rt.tokenizer.pad_token_id,
    )
    with torch.no_grad():
        h, n = per_example_nll(rt.model, hard)
        s, m = per_example_nll(rt.model, soft)
    assert torch.equal(n, m)
    assert torch.allclose(h, s, atol=1e-5)


def test_top_k_distribution_by_hand():
    logits = torch.tensor([[0.0, 2.0, 1.0, -5.0]])
    ids, probs = top_k_distribution(logits, 2)
    assert ids.tolist() == [[1, 2]]
    e = torch.exp(torch.tensor([2.0, 1.0]))
    assert torch.allclose(probs, (e / e.sum()).unsqueeze(0))


def test_teacher_targets_score_the_students_tokens_after_the_teachers_prompt(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    rt.model.set_adapter(PUBLIC)
    students = [
        encode_pair(rt.tokenizer, "Q: a?\nA:", " It is a gene.", 64),
        encode_pair(rt.tokenizer, "Q: bb?\nA:", " Many causes are known to doctors.", 64),
    ]
    teachers = ["Example: x\nQ: a?\nA:", "Example: y y y\nQ: bb?\nA:"]
    out = teacher_targets(rt.model, rt.tokenizer, teachers, students, top_k=5)
    for student, teacher, got in zip(students, teachers, out, strict=True):
        assert got.input_ids == student.input_ids and got.labels == student.labels
        n = student.num_target_tokens
        assert got.soft_ids.shape == got.soft_probs.shape == (n, 5)
        assert torch.allclose(got.soft_probs.sum(-1), torch.ones(n))
        # By hand: the teacher's logits at the positions that predict the response.
        p_ids = rt.tokenizer(teacher, add_special_tokens=False)["input_ids"]
        full = torch.tensor([p_ids + student.response_ids])
        with torch.no_grad():
            logits = rt.model(input_ids=full).logits[0, len(p_ids) - 1 : -1]
        ids, probs = top_k_distribution(logits, 5)
        assert torch.equal(got.soft_ids, ids)
        assert torch.allclose(got.soft_probs, probs, atol=1e-5)
        assert IGNORE_INDEX not in got.soft_ids


def test_distillation_changes_w_s_only_and_uses_the_teacher_prompts(
    tiny_model_dir, tmp_path, scripted, monkeypatch
):
    base_l, base_s, _ = _round(tiny_model_dir, tmp_path, "hard")
    seen = []
    real = client_mod.teacher_targets

    def spy(model, tokenizer, prompts, students, top_k):
        seen.append((list(prompts), top_k, model.active_adapter))
        return real(model, tokenizer, prompts, students, top_k)

    monkeypatch.setattr(client_mod, "teacher_targets", spy)
    soft_l, soft_s, _ = _round(tiny_model_dir, tmp_path, "soft", **{"synth.distill-top-k": 8})
    assert _same(base_l, soft_l)
    assert not _same(base_s, soft_s)
    [(prompts, top_k, adapter)] = seen
    assert top_k == 8 and adapter == PUBLIC and len(prompts) == 2
    assert all(p.startswith("Demo: ") for p in prompts)


# --- shared demonstrations: groups of response prompts show one draw --------------------


def _record_prompts(settings: SynthSettings, seed: int = 0) -> tuple[list[str], list[str]]:
    """(instruction prompts, response prompts) SynGen sends, every instruction distinct."""
    asked: dict[str, list[str]] = {"instruction": [], "response": []}

    def fake_generate(prompts, spec):
        if spec.stop == ("\n",):
            asked["instruction"] += prompts
            n = len(asked["instruction"])
            return [
                Generation(f"What causes rare disease number {n + i} ?", True)
                for i in range(len(prompts))
            ]
        asked["response"] += prompts
        answer = "It is caused by many different things in the human body and genes."
        return [Generation(answer, True) for _ in prompts]

    fmt = make_prompt_format("alpaca", None)
    generate_synthetic(examples(8), fake_generate, fmt, settings, random.Random(seed))
    return asked["instruction"], asked["response"]


def _demo_block(prompt: str) -> str:
    """The demonstrations of an Alpaca response prompt: everything before the new block."""
    return prompt[: prompt.rindex("### Instruction:")]


def test_shared_demonstrations_group_the_response_prompts_and_change_nothing_else():
    base = SynthSettings(
        attempts=6, do_sample=True, response_demos=2, novelty="rouge", novelty_threshold=1.0
    )
    own_i, own_r = _record_prompts(base)
    shared_i, shared_r = _record_prompts(dataclasses.replace(base, shared_demos=3))
    assert len(own_r) == len(shared_r) == 6
    assert shared_i == own_i  # the instruction phase is untouched
    groups = [{_demo_block(p) for p in shared_r[k : k + 3]} for k in (0, 3)]
    assert [len(g) for g in groups] == [1, 1] and groups[0] != groups[1]
    assert len({_demo_block(p) for p in own_r}) > 2  # without sharing: a draw per prompt
    # The first prompt of each group draws as the unshared first prompt does.
    assert _demo_block(shared_r[0]) == _demo_block(own_r[0])
    # Prompts keep their own instruction.
    assert [p[p.rindex("### Instruction:") :] for p in shared_r] == [
        p[p.rindex("### Instruction:") :] for p in own_r
    ]
    assert _record_prompts(dataclasses.replace(base, shared_demos=1)) == (own_i, own_r)
    with pytest.raises(Exception, match=r"shared-demos"):
        SynthSettings(shared_demos=0)


# --- sampled SynGen is reproducible whatever the worker ran before ---------------------


def test_sampled_syngen_depends_on_the_phase_seed_not_on_the_process_history(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"synth.do-sample": True, "synth.attempts": 3})
    info = RoundInfo(0, 1, 2, 0)

    def texts(history: int, round_info: RoundInfo = info) -> list[str]:
        torch.manual_seed(history)  # whatever the worker process did before
        torch.rand(history)
        result = client_mod.synthesize(rt, cfg, round_info, examples(4), PUBLIC)
        return [f"{e.instruction}|{e.output}" for e in result.examples] + [str(result.rejected)]

    first = texts(1)
    assert texts(2) == first and texts(3) == first
    assert texts(1, RoundInfo(1, 1, 2, 0)) != first  # another client samples otherwise
