import jiwer
import pytest
import sacrebleu

from nanospeechrl import rewards as R
from nanospeechrl.rewards import normalize

PAIRS = [  # (hypothesis, reference)
    ("The cat sat on a mat.", "the cat sat on the mat"),
    ("Hello, WORLD!", "hello world"),
    ("she sells sea shells", "she sells seashells by the sea shore"),
    ("kitten", "sitting"),
    ("Don't stop now", "do not stop now"),
]


def test_normalize():
    assert normalize("Hello, World!") == "hello world"
    assert normalize("  It's   a\ttest.\n") == "it's a test"
    assert normalize("'Quoted,' she said.") == "quoted she said"
    assert normalize("Don\u2019t stop") == "don't stop"
    assert (normalize("forty-two apples; at seven o'clock?")
            == "forty two apples at seven o'clock")
    assert normalize("rock 'n' roll") == "rock n roll"
    assert normalize("Über 3 Äpfel...") == "über 3 äpfel"
    assert normalize(" ?! ") == ""


def test_normalize_lowercases_and_strips_punctuation():
    assert normalize("Hello, World! Don't-stop \"now\".") == "hello world don't stop now"


def test_wer_and_cer_are_one_minus_jiwer_on_normalised_text():
    got_w, got_c = R.wer(*zip(*PAIRS)), R.cer(*zip(*PAIRS))
    assert len(got_w) == len(got_c) == len(PAIRS)
    for (h, r), w, c in zip(PAIRS, got_w, got_c):
        assert w == pytest.approx(max(0.0, 1 - jiwer.wer(normalize(r), normalize(h))), abs=1e-12)
        assert c == pytest.approx(max(0.0, 1 - jiwer.cer(normalize(r), normalize(h))), abs=1e-12)
    # hand-computed: one substitution in six words; kitten -> sitting is 3 edits over 7 characters
    assert got_w[0] == pytest.approx(5 / 6)
    assert got_c[3] == pytest.approx(1 - 3 / 7)
    assert got_w[1] == 1.0 and got_c[1] == 1.0  # case and punctuation do not count
    assert got_w[2] < 0.5


def test_case_and_punctuation_do_not_matter():
    ref = "the quick brown fox"
    for hyp in ("The QUICK brown fox.", "the, quick; brown -- fox!", "  the quick   brown fox  "):
        assert R.wer([hyp], [ref]) == [1.0]
        assert R.cer([hyp], [ref]) == [1.0]
        assert R.bleu([hyp], [ref])[0] == pytest.approx(1.0)


def test_many_insertions_floor_at_zero():
    hyp, ref = "a b c d e f g h i j", "a"
    assert jiwer.wer(ref, hyp) > 1  # the raw error rate exceeds 1 ...
    assert R.wer([hyp], [ref]) == [0.0]  # ... the reward does not go negative
    assert jiwer.cer("ab", "ab cd ef gh") > 1
    assert R.cer(["ab cd ef gh"], ["ab"]) == [0.0]


def test_empty_reference():
    assert R.wer([""], [""]) == [1.0]
    assert R.cer(["..."], ["!"]) == [1.0]  # both normalise to empty
    assert R.wer(["something"], [""]) == [0.0]
    assert R.cer(["something"], [""]) == [0.0]
    assert R.wer([""], ["a b"]) == [0.0]  # empty hypothesis: all deletions


def test_hallucination_loop_not_in_reference():
    assert R.hallucination(["a b c a b c a b c"], ["a b c d e"]) == [-1.0]
    assert R.hallucination(["A b, C. a B c!"], ["a b c d"]) == [-1.0]  # normalised before counting
    assert R.is_hallucination("the cat sat the cat sat on the mat", "the cat sat on the mat")


def test_hallucination_repetition_present_in_reference():
    ref = "a b c a b c a b c"
    assert R.hallucination([ref], [ref]) == [0.0]
    assert R.hallucination(["a b c a b c"], ["x a b c y a b c z"]) == [0.0]
    # more repeats than the reference has is a loop again
    assert R.hallucination(["a b c a b c a b c"], ["x a b c y a b c z"]) == [-1.0]


def test_hallucination_runaway_length():
    ref = "one two three"  # limit: 2 * 3 + 4 = 10 words
    ten = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"
    assert R.hallucination([ten], [ref]) == [0.0]
    assert R.hallucination([ten + " w11"], [ref]) == [-1.0]
    assert R.hallucination(["w1 w2 w3 w4 w5"], [""]) == [-1.0]
    assert R.hallucination(["w1", ""], ["", ""]) == [-1.0, 0.0]  # silence: any word is made up


def test_hallucination_normal_hypothesis_is_zero():
    hyps = ["the dog sat on the rug", "the cat sat on the mat", ""]
    refs = ["the cat sat on the mat"] * 3
    assert R.hallucination(hyps, refs) == [0.0, 0.0, 0.0]


def test_keyword_hand_computed():
    ref = "The cat sat on the mat with a hat"  # keywords: cat sat mat hat
    assert R.keywords(ref) == {"cat": 1, "sat": 1, "mat": 1, "hat": 1}
    got = R.keyword(["the cat sat on the hat",  # P 3/3, R 3/4
                     "A cat sat on a hat and a bat",  # cat sat hat bat: P 3/4, R 3/4
                     "Cat cat cat",  # P 1/3, R 1/4 (multiplicity counts)
                     "the of and",  # no keywords: P 0, R 0
                     "the CAT, sat on the mat with a hat!"], [ref] * 5)
    want = [0.5 * (1 + 3 / 4), 0.75, 0.5 * (1 / 3 + 1 / 4), 0.0, 1.0]
    assert got == pytest.approx(want, abs=1e-12)


def test_keyword_without_reference_keywords():
    assert R.keyword(["the of", "cat"], ["it is the", "it is the"]) == [1.0, 0.0]


def test_bleu_equals_sacrebleu_on_normalised_text():
    hyps = [h for h, _ in PAIRS] + ["the the the", ""]
    refs = [r for _, r in PAIRS] + ["the cat is on the mat", "something"]
    got = R.bleu(hyps, refs)
    for h, r, b in zip(hyps, refs, got):
        assert b == pytest.approx(sacrebleu.sentence_bleu(normalize(h), [normalize(r)]).score / 100, abs=1e-12)
        assert 0.0 <= b <= 1.0 + 1e-9
    assert got[-1] == 0.0
    assert 0.0 < got[0] < 1.0


def test_bleu_identical_is_one():
    for s in ("the quick brown fox jumps over the lazy dog", "two words", "Hello, World!"):
        assert R.bleu([s], [s])[0] == pytest.approx(1.0, abs=1e-9)


def test_parse_rewards():
    assert R.parse_rewards("wer:1,hallucination:0.5") == {"wer": 1.0, "hallucination": 0.5}
    assert R.parse_rewards("wer") == {"wer": 1.0}
    assert R.parse_rewards(" cer , bleu:-2 ,") == {"cer": 1.0, "bleu": -2.0}
    with pytest.raises(ValueError) as e:
        R.parse_rewards("wer:1,wrong:2")
    assert "wrong" in str(e.value)
    for name in R.REWARDS:
        assert name in str(e.value)
    for bad in ("wer:abc", "wer:nan", "wer:inf"):
        with pytest.raises(ValueError, match="not a finite number"):
            R.parse_rewards(bad)
    with pytest.raises(ValueError):
        R.parse_rewards("")


def test_score_is_weighted_sum_of_parts():
    weights = {"wer": 2.0, "hallucination": 0.5, "keyword": 1.0}
    hyps = ["the cat sat on a mat", "go go go go go go go go go go go"]
    refs = ["the cat sat on the mat", "go home"]
    total, parts = R.score(weights, hyps, refs, audio_id=["x", "y"])  # extra fields are accepted
    assert set(parts) == set(weights)
    assert parts["wer"] == pytest.approx([5 / 6, 0.0])
    assert parts["hallucination"] == [0.0, -1.0]
    # keyword row 2: hyp {go: 11}, ref {go: 1, home: 1}: P 1/11, R 1/2
    assert parts["keyword"] == pytest.approx([1.0, 0.5 * (1 / 11 + 1 / 2)])
    assert total == pytest.approx([2 * 5 / 6 + 1.0, -0.5 + 0.5 * (1 / 11 + 1 / 2)], abs=1e-12)
    for i in range(2):
        assert total[i] == pytest.approx(sum(w * parts[n][i] for n, w in weights.items()))


def test_chrf_partial_credit_where_bleu_gives_none():
    ref = "Mis amigos arreglan las puertas negras."
    near, far = "Mis amigas arreglan las puertas negro.", "Tom compra un perro."
    c, b = R.chrf([ref, near, far], [ref] * 3), R.bleu([near], [ref])
    assert c[0] == pytest.approx(1.0) and c[2] < c[1] < 1.0
    assert c[1] > b[0]  # two wrong inflections cost BLEU more than character n-grams
