"""Fluency by a causal LM from a local folder: a tiny GPT-2 built from a config with a word-level
tokenizer trained here, fitted briefly to a few captions."""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from pipelines.annotators.causal_lm import CausalLMScorer
from pipelines.annotators.scene_graph_rewrite import SceneGraphRewriter
from schemas.config_errors import ConfigError
from schemas.stages import SceneGraphNegativeConfig
from tests.annotate.test_scene_graph_rewrite import CORPUS, COUCH_ROW, SIMILAR


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-gpt2"))
    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="<s>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=words.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2,
                                       n_head=2, bos_token_id=1, eos_token_id=1))
    batch = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor([1, *words.encode(t).ids]) for t in CORPUS], batch_first=True, padding_value=-100)
    inputs = batch.clamp(min=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(input_ids=inputs, attention_mask=(batch >= 0).long(), labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_batched_scores_equal_one_by_one_scores(tiny_lm):
    scorer = CausalLMScorer(tiny_lm, device="cpu", batch_size=3)
    texts = ["A dog .", "A black dog sitting on a red couch .", "A man riding a horse on a red couch ."]
    batched = scorer.score_many(texts)
    single = [scorer.score_many([t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)
    assert all(math.isfinite(s) and s < 0 for s in batched)


def test_the_score_is_the_mean_next_token_log_probability(tiny_lm):
    scorer = CausalLMScorer(tiny_lm, device="cpu")
    ids = [1, *scorer.tokenizer("A cat lying on a bed .", add_special_tokens=False)["input_ids"]]
    with torch.inference_mode():
        logprobs = torch.log_softmax(scorer.model(input_ids=torch.tensor([ids])).logits[0], dim=-1)
    expected = sum(float(logprobs[i, ids[i + 1]]) for i in range(len(ids) - 1)) / (len(ids) - 1)
    assert scorer.score_many(["A cat lying on a bed ."])[0] == pytest.approx(expected, abs=1e-5)


def test_a_fitted_caption_scores_above_its_shuffle_and_ranks_rewrites(tiny_lm):
    scorer = CausalLMScorer(tiny_lm, device="cpu")
    known, shuffled = scorer.score_many(["A black dog sitting on a red couch .", "couch red a on sitting dog black A"])
    assert known > shuffled
    rows = SceneGraphRewriter(SIMILAR, scorer, SceneGraphNegativeConfig(top_n=4)).rewrite(COUCH_ROW)
    assert len(rows) == 4 and [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_a_missing_folder_says_what_to_put_there(tmp_path):
    with pytest.raises(ConfigError, match="language_model.*causal LM folder"):
        CausalLMScorer(str(tmp_path / "nothing"))
