import random
import re

import pytest

from nanospeechrl.builtin import lexicon, tasks
from nanospeechrl.rewards import normalize

NAMES = set(lexicon.NAMES_FEMALE + lexicon.NAMES_MALE)
# Words that carry an answer's content: who, where, what, how many, when.
CONTENT = {normalize(w) for w in (
    lexicon.NAMES_FEMALE + lexicon.NAMES_MALE + lexicon.CITIES + lexicon.SITES + lexicon.COLOURS
    + lexicon.DAYS + lexicon.PEOPLE + lexicon.ONES + lexicon.TENS[2:]
    + [lexicon.pluralise(w) for w in lexicon.THINGS + lexicon.ANIMALS] + lexicon.THINGS)}
NUMBERS = set(lexicon.ONES + lexicon.TENS[2:])
AUX = {"does", "did", "is", "live", "work", "buy", "meet", "have", "go"}
FORMS = {"who", "where", "what", "how many", "how old", "when", "yes/no"}


def sentences_of(passage):
    return re.split(r"(?<=\.) ", passage)


def words(text):
    return {w.removesuffix("'s") for w in normalize(text).split()}


def content_words(text):
    return words(text) & CONTENT


def form_of(question):
    """The question's form, read from its words alone."""
    q = question.lower()
    for prefix, form in (("who", "who"), ("where", "where"), ("how many", "how many"),
                         ("how old", "how old"), ("when", "when"), ("what time", "when"),
                         ("what", "what"), ("does", "yes/no"), ("did", "yes/no"),
                         ("is", "yes/no")):
        if q.startswith(prefix + " "):
            return form
    raise AssertionError(question)


@pytest.fixture(scope="module")
def qa():
    rng = random.Random(0)
    return [tasks.qa_parts(rng) for _ in range(600)]


@pytest.fixture(scope="module")
def pairs():
    rng = random.Random(0)
    return [tasks.translation_pair(rng) for _ in range(3000)]


@pytest.fixture(scope="module", params=list(tasks.DRAW))
def splits(request):
    return request.param, tasks.split_task_texts(request.param, 0, 2000, 100, 100, 100)


def test_determinism():
    assert tasks.qa_item(random.Random(5)) == tasks.qa_item(random.Random(5))
    assert tasks.translation_pair(random.Random(5)) == tasks.translation_pair(random.Random(5))
    for task in list(tasks.DRAW):
        a = tasks.split_task_texts(task, 1, 50, 10, 10, 10)
        assert a == tasks.split_task_texts(task, 1, 50, 10, 10, 10)
        assert a != tasks.split_task_texts(task, 2, 50, 10, 10, 10)
        b = tasks.split_task_texts(task, 1, 80, 10, 10, 10)  # held-out splits ignore n_train
        assert all(a[s] == b[s] for s in ("dev", "test", "test_accent"))


def test_split_shapes(splits):
    task, out = splits
    assert list(out) == ["train", "dev", "test", "test_accent"]
    assert [len(v) for v in out.values()] == [2000, 100, 100, 100]
    for items in out.values():
        for item in items:
            assert set(item) == {"transcript", "prompt", "text"}
            assert (item["prompt"] == "") == (task == "ast")
            assert item["transcript"].isascii()


def test_no_leakage(splits):
    task, out = splits
    keys = [(normalize(i["transcript"]), normalize(i["prompt"]))
            for items in out.values() for i in items]
    assert len(keys) == len(set(keys))
    sents = {split: {normalize(s) for i in items for s in sentences_of(i["transcript"])}
             for split, items in out.items()}
    for split in ("dev", "test", "test_accent"):
        assert not sents[split] & sents["train"], split
    if task == "ast":  # no source sentence twice, in any splits
        assert len({k for k, _ in keys}) == len(keys)


def test_passages(qa):
    for sents, question, answer, form in qa:
        assert 2 <= len(sents) <= 4
        assert all(4 <= len(s.split()) <= 11 and s.isascii() for s in sents)
        names = [w.removesuffix("'s") for s in sents for w in re.findall(r"[\w']+", s)]
        names = [w for w in names if w in NAMES]
        assert len(names) == len(set(names)) >= len(sents)  # one fact per person
        assert len(answer.split()) <= 10 and answer.endswith(".") and question.endswith("?")


def test_question_forms(qa):
    forms = [form_of(q) for _, q, _, _ in qa]
    assert forms == [f for *_, f in qa]
    assert set(forms) == FORMS
    answers = [a.split(",")[0] for _, q, a, f in qa if f == "yes/no"]
    assert set(answers) == {"Yes", "No"}
    assert 0.35 < answers.count("Yes") / len(answers) < 0.65


def test_answers_need_the_passage(qa):
    for sents, question, answer, form in qa:
        passage = " ".join(sents)
        assert content_words(answer) <= content_words(passage + " " + question), (passage, answer)
        if form == "yes/no":  # "Yes" iff the question says what the answer says
            q, a = words(question) - AUX, words(answer.split(", ", 1)[1])
            wrong = (q - a) | (a & NUMBERS) - q  # "twenty" asked, "twenty one" answered
            assert answer.startswith("No, " if wrong else "Yes, "), (passage, question, answer)
        else:
            assert content_words(answer) - content_words(question), (question, answer)


def test_noun_phrases():
    np = tasks.noun_phrase
    assert np("the", "map", "red") == ("the red map", "el mapa rojo")
    assert np("the", "house", "red", plural=True) == ("the red houses", "las casas rojas")
    assert np(2, "cup", "green") == ("two green cups", "dos tazas verdes")
    assert np("a", "umbrella", "old") == ("an old umbrella", "un paraguas viejo")
    assert np("this", "umbrella", plural=True) == ("these umbrellas", "estos paraguas")
    assert np("my", "clock", "blue", True) == ("my blue clocks", "mis relojes azules")
    assert np("this", "flower", "small", True) == ("these small flowers",
                                                   "estas flores pequeñas")
    assert np(20, "truck", "brown") == ("twenty brown trucks", "veinte camiones marrones")
    assert np(16, "pencil", "grey") == ("sixteen grey pencils", "dieciséis lápices grises")
    assert np("the", "photo", "white") == ("the white photo", "la foto blanca")
    assert np("a", "bus", "expensive") == ("an expensive bus", "un autobús caro")
    with pytest.raises(ValueError):
        np("a", "cup", plural=True)
    with pytest.raises(ValueError):
        np(21, "cup")


def test_verbs():
    vs, np = tasks.verb_sentence, tasks.noun_phrase
    assert tasks.conjugate("vender", "3p", "past") == "vendieron"
    assert tasks.conjugate("abrir", "1p", "present") == "abrimos"
    assert tasks.conjugate("pintar", "1s", "past") == "pinté"
    assert vs("we", "wash", np("the", "cup", "red", True), "past") == (
        "We washed the red cups.", "Lavamos las tazas rojas.")  # pro-drop
    assert vs("Anna", "sell", np("the", "box", "small", True), negative=True) == (
        "Anna doesn't sell the small boxes.", "Anna no vende las cajas pequeñas.")
    assert vs("I", "hide", np("a", "key"), "past", place="in the kitchen", time="yesterday") == (
        "I hid a key in the kitchen yesterday.", "Escondí una llave en la cocina ayer.")
    assert vs("my parents", "receive", np(3, "letter"), time="every day") == (
        "My parents receive three letters every day.",
        "Mis padres reciben tres cartas todos los días.")
    assert vs("they", "draw", np("this", "map"), "past", True) == (
        "They didn't draw this map.", "No dibujaron este mapa.")
    assert vs("my sister", "buy", np("my", "shoe", plural=True), "past")[0] == (
        "My sister bought my shoes.")
    with pytest.raises(ValueError, match="tense"):
        vs("we", "wash", np("the", "cup"), "present", time="yesterday")


def test_copula():
    cs = tasks.copula_sentence
    assert cs("the", "cup", "dirty", plural=True) == ("The cups are dirty.",
                                                     "Las tazas están sucias.")
    assert cs("the", "map", "red") == ("The map is red.", "El mapa es rojo.")
    assert cs("my", "car", "clean", negative=True) == ("My car isn't clean.",
                                                       "Mi coche no está limpio.")
    assert cs("this", "chair", "cheap", True, True, "green") == (
        "These green chairs aren't cheap.", "Estas sillas verdes no son baratas.")


def test_agreement_sweep(pairs):
    """In generated Spanish every determiner and adjective agrees with its noun."""
    nouns = {}  # spanish form -> (gender, plural or None when both: "paraguas")
    for en, (es, g, *_) in tasks.NOUNS.items():
        pl = tasks.noun_phrase("the", en, plural=True)[1].split()[1]
        nouns[es], nouns[pl] = (g, None if pl == es else False), (g, None if pl == es else True)
    dets = {d: (g, pl) for forms in tasks.DETS.values() for d, (g, pl) in
            zip(forms, [("m", False), ("f", False), ("m", True), ("f", True)])}
    dets.update({"mi": (None, False), "mis": (None, True)})
    dets.update({w: (None, True) for w in tasks.ES_NUMBERS[2:]})
    adjs = {tasks.es_adjective(a, g, pl): (a, g, pl) for a in tasks.ADJS
            for g in "mf" for pl in (False, True)}
    checked = 0
    for en, es in pairs:
        assert en.isascii() and en[0].isupper() and en.endswith(".")
        assert es[0].isupper() and es.endswith(".")
        toks = es[:-1].lower().split()
        for i, w in enumerate(toks[1:], 1):
            if w in nouns and toks[i - 1] in dets:
                g, pl = nouns[w]
                dg, dpl = dets[toks[i - 1]]
                assert pl in (None, dpl) and dg in (None, g), es
                nxt = toks[i + 1] if i + 1 < len(toks) else ""
                if nxt in adjs:
                    a = adjs[nxt][0]
                    assert nxt == tasks.es_adjective(a, g, dpl), es
                checked += 1
                if {"es", "son", "está", "están"} & set(toks):  # predicate agrees with subject
                    assert toks[-1] == tasks.es_adjective(adjs[toks[-1]][0], g, dpl), es
    assert checked > 2000


def test_tense_and_negation_sweep(pairs):
    pasts = {p for p, _, _ in tasks.VERBS.values()}
    for en, es in pairs:
        words = set(normalize(en).split())
        past = bool(words & pasts) or "didn't" in words
        for tense, times in tasks.TIMES.items():
            if any(re.search(rf"\b{t}\b", en) for t in times):
                assert past == (tense == "past"), en
        assert ("n't" in en) == (" no " in f" {es.lower()}"), (en, es)
        if normalize(en).split()[0] in ("i", "we", "they"):  # pro-drop
            assert es.split()[0].lower() not in ("yo", "nosotros", "ellos"), es


def test_unknown_task():
    with pytest.raises(ValueError, match="sqa, ast"):
        tasks.split_task_texts("asr", 0, 1, 1, 1, 1)
