"""Tokenizers built in the test session (no downloads): a byte-level BPE, a WordPiece, a
SentencePiece-style Metaspace BPE, a llama-3-style regex BPE and a Prepend-normalizer BPE."""

from __future__ import annotations

import json

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from spanlab.tasks.essays import essay_sentences


@pytest.fixture(scope="session", autouse=True)
def _private_count_cache(tmp_path_factory):
    """Token-count tables (spanlab.tasks.diskcache) go to a folder of this test session, not to the
    user's cache, unless the caller chose one (SPANLAB_CACHE_DIR=off tests without any)."""
    import os

    from spanlab.tasks.diskcache import ENV

    if ENV in os.environ:
        yield
        return
    os.environ[ENV] = str(tmp_path_factory.mktemp("spanlab-cache"))
    yield
    os.environ.pop(ENV, None)


def _corpus() -> list[str]:
    return list(essay_sentences()[:3000])


@pytest.fixture(scope="session")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=2000, special_tokens=["<s>"], show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<s>")


@pytest.fixture(scope="session")
def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=3000, special_tokens=["[UNK]", "[CLS]", "[SEP]"],
                                                                 show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")


@pytest.fixture(scope="session")
def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    # SentencePiece-style: spaces become "▁" joined to the next word, prepended to the first word
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>"],
                                                           show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")


# llama-3's pre-tokenizer regex: punctuation takes the newlines after it (".\n" is one piece)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@pytest.fixture(scope="session")
def llama3_style_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    sents = _corpus()
    lines = ["\n".join(sents[i:i + 4]) for i in range(0, len(sents), 4)]  # so ".\n" becomes a token
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<s>"], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>")


@pytest.fixture(scope="session")
def prepend_tokenizer() -> PreTrainedTokenizerFast:
    # old Llama-2 conversion: a normalizer prepends "▁" to the whole text and there is no
    # pre-tokenizer, so counts of pieces do not add up
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>"],
                                                           show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")


@pytest.fixture(scope="session")
def builtin_tokenizer():
    from spanlab.tasks import load_tokenizer

    return load_tokenizer()


@pytest.fixture(params=["builtin", "bpe", "wordpiece", "metaspace"])
def any_tokenizer(request, builtin_tokenizer, bpe_tokenizer, wordpiece_tokenizer, metaspace_tokenizer):
    return {"builtin": builtin_tokenizer, "bpe": bpe_tokenizer, "wordpiece": wordpiece_tokenizer,
            "metaspace": metaspace_tokenizer}[request.param]


def write_squad(path, n_articles=6, paras=5):
    sents = essay_sentences()
    data, k = [], 0
    for a in range(n_articles):
        ps = []
        for p in range(paras):
            ctx = " ".join(sents[k:k + 6]) + f" The code word of paragraph {a}-{p} is zebra{a}x{p}."
            k += 6
            qas = [{"id": f"q{a}{p}", "question": f"What is the code word of paragraph {a}-{p}?",
                    "answers": [{"text": f"zebra{a}x{p}", "answer_start": 0}], "is_impossible": False},
                   {"id": f"i{a}{p}", "question": "Unanswerable?", "answers": [], "plausible_answers": [],
                    "is_impossible": True}]
            ps.append({"context": ctx, "qas": qas})
        data.append({"title": f"Article {a}", "paragraphs": ps})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def write_hotpot(path, n=20):
    sents = essay_sentences()
    rows = []
    for i in range(n):
        context = [[f"Title {i}-{j}", [s + " " for s in sents[(i * 10 + j) * 3:(i * 10 + j) * 3 + 3]]] for j in range(10)]
        context[3][1].append(f"The capital of Land{i} is Town{i}. ")
        rows.append({"_id": f"h{i}", "question": f"What is the capital of Land{i}?", "answer": f"Town{i}",
                     "type": "bridge", "level": "easy", "supporting_facts": [[f"Title {i}-3", 3]], "context": context})
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture()
def qa_dir(tmp_path):
    write_squad(tmp_path / "squad.json")
    write_hotpot(tmp_path / "hotpot_dev_distractor_v1.json")
    return tmp_path
