"""Texts for the tasks beyond ASR: spoken QA ("sqa") and English->Spanish speech translation
("ast"), with leak-free splits like grammar.split_texts().

sqa: a short spoken passage of facts about different people, a text question about one fact
and a one-sentence answer that needs the audio. ast: a spoken English sentence and its
Spanish translation from a tiny bilingual grammar: gender and number agreement, adjectives
after the noun, regular verbs conjugated by rule, pro-drop, negation and ser vs estar.
The English is exactly what eSpeak says: plain ASCII, numbers as words.
"""
import random
import re

from nanospeechrl.builtin import lexicon as L
from nanospeechrl.builtin.grammar import expand, number_words
from nanospeechrl.rewards import normalize

# ---------------------------------------------------------------- spoken QA
# Names ending in "s" would give "James's"; pronouns come with the name.
_PEOPLE = ([(n, "her") for n in L.NAMES_FEMALE if not n.endswith("s")]
           + [(n, "his") for n in L.NAMES_MALE if not n.endswith("s")])
JOBS = """teacher doctor nurse farmer baker driver pilot artist singer dancer writer painter
waiter chef engineer scientist gardener builder sailor mechanic librarian dentist actor
musician photographer reporter""".split()
WORKPLACES = """market station library school museum hospital bakery restaurant hotel airport
farm cinema theatre bank gym factory garage supermarket pharmacy bookshop studio zoo""".split()
PETS = "cat dog rabbit hamster horse goat duck chicken parrot turtle".split()
_AGES = [number_words(n) for n in range(6, 91)]
_COUNTS = [number_words(n) for n in range(2, 21)]


def _clock(rng):
    t = expand(rng, "{clock}")
    return t[0].lower() + t[1:]  # expand() capitalises: "Half past two"


# kind: (slots, passage sentences, answer, [(form, question[, answer])]). A slot is a list or a
# draw(rng); {n} is the person, {his} their pronoun, {o} another person. A yes/no question
# asks about {x}: the first slot's value half the time, another value of it otherwise.
FACTS = {
    "lives": ({"c": L.CITIES}, ["{n} lives in {c} with {his} family.",
              "{n} lives in a small flat in {c}.", "These days {n} lives in {c}."],
              "{n} lives in {c}.", [("where", "Where does {n} live?"), ("who", "Who lives in {c}?"),
                                    ("yes/no", "Does {n} live in {x}?")]),
    "works": ({"w": WORKPLACES}, ["{n} works at the {w} in town.",
              "{n} works at the {w} every day.", "Every morning {n} goes to work at the {w}."],
              "{n} works at the {w}.",
              [("where", "Where does {n} work?"), ("who", "Who works at the {w}?"),
               ("yes/no", "Does {n} work at the {x}?")]),
    "bought": ({"k": _COUNTS, "p": [L.pluralise(t) for t in L.THINGS]},
               ["{n} bought {k} {p} at the market.", "Yesterday {n} bought {k} {p}.",
                "{n} bought {k} {p} last week."], "{n} bought {k} {p}.",
               [("how many", "How many {p} did {n} buy?"), ("what", "What did {n} buy?"),
                ("who", "Who bought {k} {p}?"), ("yes/no", "Did {n} buy {x} {p}?")]),
    "met": ({"t": _clock}, ["{n} met {o} at {t}.", "{n} met {o} for coffee at {t}.",
            "At {t}, {n} met {o} in the park."], "{n} met {o} at {t}.",
            [("when", "When did {n} meet {o}?"), ("when", "What time did {n} meet {o}?"),
             ("who", "Who did {n} meet?", "{n} met {o}."), ("who", "Who met {o}?", "{n} met {o}."),
             ("yes/no", "Did {n} meet {o} at {x}?")]),
    "colour": ({"c": L.COLOURS, "t": L.THINGS}, ["{n} has a {c} {t}.",
               "{n} has a {c} {t} at home.", "The {t} that {n} has is {c}."], "{n}'s {t} is {c}.",
               [("what", "What colour is {n}'s {t}?"), ("yes/no", "Is {n}'s {t} {x}?"),
                ("who", "Who has a {c} {t}?", "{n} has a {c} {t}.")]),
    "age": ({"k": _AGES}, ["{n} is {k} years old.", "{n} is {k} years old this year.",
            "{n} turned {k} years old last month."], "{n} is {k} years old.",
            [("how old", "How old is {n}?"), ("who", "Who is {k} years old?"),
             ("yes/no", "Is {n} {x} years old?")]),
    "pets": ({"k": _COUNTS[:8], "p": [L.pluralise(a) for a in PETS]},
             ["{n} has {k} {p} at home.", "{n} keeps {k} {p} on a farm."], "{n} has {k} {p}.",
             [("how many", "How many {p} does {n} have?"), ("what", "What animals does {n} have?"),
              ("who", "Who has {k} {p}?"), ("yes/no", "Does {n} have {x} {p}?")]),
    "trip": ({"c": L.CITIES, "d": L.DAYS}, ["{n} went to {c} on {d}.",
             "{n} took the train to {c} on {d}.", "On {d}, {n} drove to {c}."], "{n} went to {c}.",
             [("where", "Where did {n} go on {d}?"), ("who", "Who went to {c}?"),
              ("when", "When did {n} go to {c}?", "{n} went to {c} on {d}."),
              ("yes/no", "Did {n} go to {x}?")]),
    "job": ({"j": JOBS, "k": _COUNTS}, ["{n} is a {j} in a small town.", "{n} works as a {j}.",
            "{n} has been a {j} for {k} years."], "{n} is a {j}.",
            [("what", "What does {n} do?"), ("what", "What is {n}'s job?"),
             ("who", "Who works as a {j}?"), ("yes/no", "Is {n} a {x}?")]),
}
_AN = re.compile(r"\b([Aa]) (?=[aeiou])")  # "a orange cup" -> "an orange cup"


def _draw(rng, slot):
    return slot(rng) if callable(slot) else rng.choice(slot)


def _fill(template: str, values: dict) -> str:
    return _AN.sub(r"\1n ", template.format(**values))


def qa_parts(rng: random.Random) -> tuple[list[str], str, str, str]:
    """(passage sentences, question, answer, question form): 2-4 facts of different kinds
    about different people, and one question about one of them."""
    k = rng.randint(2, 4)
    people = rng.sample(_PEOPLE, k + 1)  # all distinct; the last one is only ever met
    facts = []
    for kind, (name, his) in zip(rng.sample(list(FACTS), k), people):
        values = {"n": name, "his": his, "o": people[-1][0]}
        values.update({s: _draw(rng, slot) for s, slot in FACTS[kind][0].items()})
        facts.append((kind, values, _fill(rng.choice(FACTS[kind][1]), values)))
    kind, values, _ = rng.choice(facts)
    slots, _, answer, questions = FACTS[kind]
    form = rng.choice(list(dict.fromkeys(q[0] for q in questions)))  # forms equally likely
    _, question, *own_answer = rng.choice([q for q in questions if q[0] == form])
    answer = _fill(own_answer[0] if own_answer else answer, values)
    if form == "yes/no":
        first = next(iter(slots))
        values["x"] = values[first]
        if rng.random() < 0.5:  # a false one, half the time
            while values["x"] == values[first]:
                values["x"] = _draw(rng, slots[first])
        answer = ("Yes, " if values["x"] == values[first] else "No, ") + answer
    return [s for _, _, s in facts], _fill(question, values), answer, form


def qa_item(rng: random.Random) -> tuple[str, str, str]:
    """(passage, question, answer) for spoken QA."""
    sents, question, answer, _ = qa_parts(rng)
    return " ".join(sents), question, answer


# ---------------------------------------------------------------- translation
def _table(text: str, sep: str = " ") -> list[list[str]]:
    """"a b c, d e f" -> [["a", "b", "c"], ["d", "e", "f"]]."""
    return [entry.strip().split(sep) for entry in text.split(",")]


# english spanish gender kind [irregular plural]; kind: s small, o small that opens, b big,
# d big that opens (verbs say which kinds they take). Some genders surprise: el mapa, la foto.
NOUNS = {r[0]: r[1:] for r in _table("""cup taza f s, plate plato m s, spoon cuchara f s,
knife cuchillo m s, glass vaso m s, map mapa m s, flower flor f s, clock reloj m s,
shirt camisa f s, shoe zapato m s, key llave f s, pen bolígrafo m s, lamp lámpara f s,
ball pelota f s, toy juguete m s, towel toalla f s, jacket chaqueta f s, photo foto f s,
radio radio f s, pencil lápiz m s, plant planta f s, phone teléfono m s, picture cuadro m s,
chair silla f s, box caja f o, bottle botella f o, bag bolsa f o, book libro m o,
letter carta f o, basket cesta f o, umbrella paraguas m o paraguas, house casa f b,
car coche m b, truck camión m b, bus autobús m b, tree árbol m b, wall pared f b,
boat barco m b, sofa sofá m b, table mesa f b, door puerta f d, window ventana f d""")}
# english spanish(masculine singular) group; the "state" group takes estar, the rest ser.
ADJS = {r[0]: r[1:] for r in _table("""red rojo colour, white blanco colour,
black negro colour, yellow amarillo colour, green verde colour, blue azul colour,
brown marrón colour, grey gris colour, big grande size, small pequeño size, new nuevo age,
old viejo age, cheap barato price, expensive caro price, clean limpio state,
dirty sucio state""")}
# english base, english past, spanish infinitive (all regular), noun kinds taken
VERBS = {r[0]: r[1:] for r in _table("""buy bought comprar sob, sell sold vender sob,
wash washed lavar sobd, clean cleaned limpiar sobd, paint painted pintar sobd,
draw drew dibujar sobd, use used usar sob, fix fixed arreglar sobd, hide hid esconder so,
carry carried llevar so, keep kept guardar so, share shared compartir sob,
receive received recibir so, open opened abrir od""")}
SUBJECTS = {"I": ("", "1s"), "we": ("", "1p"), "they": ("", "3p"),  # pro-drop: no Spanish subject
            "my brother": ("mi hermano", "3s"), "my sister": ("mi hermana", "3s"),
            "my parents": ("mis padres", "3p"), "the children": ("los niños", "3p"),
            "my friends": ("mis amigos", "3p")}
PLACES = dict(_table("""in the kitchen=en la cocina, at the market=en el mercado,
in the park=en el parque, at school=en la escuela, in the garden=en el jardín,
at home=en casa, in the office=en la oficina, at the station=en la estación,
at the beach=en la playa""", "="))
TIMES = {"present": dict(_table("""every day=todos los días, every week=cada semana,
on Mondays=los lunes, on Fridays=los viernes, on Saturdays=los sábados,
on weekends=los fines de semana""", "=")),
         "past": dict(_table("""yesterday=ayer, last night=anoche, last week=la semana pasada,
last year=el año pasado, this morning=esta mañana, on Monday=el lunes,
on Saturday=el sábado""", "="))}
DETS = {"the": ("el", "la", "los", "las"), "a": ("un", "una"), "my": ("mi", "mi", "mis", "mis"),
        "this": ("este", "esta", "estos", "estas")}  # masc, fem, masc plural, fem plural
ES_NUMBERS = """cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce
quince dieciséis diecisiete dieciocho diecinueve veinte""".split()
PERSONS = ("1s", "3s", "1p", "3p")  # I, he/she, we, they
ENDINGS = {("present", "ar"): "o a amos an", ("present", "er"): "o e emos en",
           ("present", "ir"): "o e imos en", ("past", "ar"): "é ó amos aron",
           ("past", "er"): "í ió imos ieron", ("past", "ir"): "í ió imos ieron"}
_UNACCENT = str.maketrans("áéíóú", "aeiou")
_NAMES = [n for n in L.NAMES_FEMALE + L.NAMES_MALE if n != "Ella"]  # Spanish "ella" is "she"


def es_plural(word: str) -> str:
    """taza -> tazas, flor -> flores, lápiz -> lápices, camión -> camiones."""
    if word[-1] in "aeiouáéó":
        return word + "s"
    if word[-1] == "z":
        return word[:-1] + "ces"
    if word[-2] in "áéíóú":  # the stress mark goes once a syllable is added
        word = word[:-2] + word[-2].translate(_UNACCENT) + word[-1]
    return word + "es"


def es_adjective(adj: str, gender: str, plural: bool) -> str:
    """The Spanish form of an English adjective agreeing with its noun: red, f, pl -> rojas."""
    word = ADJS[adj][0]
    if word.endswith("o") and gender == "f":
        word = word[:-1] + "a"
    return es_plural(word) if plural else word


def noun_phrase(det, noun: str, adj: str = "", plural: bool = False) -> tuple[str, str]:
    """(english, spanish); det is "the", "a", "my", "this" or a count 2..20 (plural):
    ("the", "map", "red") -> ("the red map", "el mapa rojo"), (2, "cup", "green") ->
    ("two green cups", "dos tazas verdes")."""
    es, gender, _, *irregular = NOUNS[noun]
    if isinstance(det, int):
        if not 2 <= det <= 20:
            raise ValueError(f"noun_phrase: count must be 2..20, got {det}")
        plural, en_det, es_det = True, number_words(det), ES_NUMBERS[det]
    else:
        if plural and det == "a":
            raise ValueError("noun_phrase: no plural with 'a'")
        en_det = "these" if plural and det == "this" else det
        es_det = DETS[det][(gender == "f") + 2 * plural]
    en_words = (adj + " " if adj else "") + (L.pluralise(noun) if plural else noun)
    en = _AN.sub(r"\1n ", f"{en_det} {en_words}")
    es_noun = (irregular[0] if irregular else es_plural(es)) if plural else es
    es_adj = " " + es_adjective(adj, gender, plural) if adj else ""
    return en, f"{es_det} {es_noun}{es_adj}"  # the adjective goes after the noun


def conjugate(infinitive: str, person: str, tense: str) -> str:
    """Regular Spanish verbs: ("lavar", "1p", "past") -> "lavamos"."""
    endings = ENDINGS[tense, infinitive[-2:]].split()
    return infinitive[:-2] + endings[PERSONS.index(person)]


def _sentence(words: list[str]) -> str:
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + "."


def verb_sentence(subject: str, verb: str, obj: tuple[str, str], tense: str = "present",
                  negative: bool = False, place: str = "", time: str = "") -> tuple[str, str]:
    """(english, spanish) clause; subject is a SUBJECTS key or a name, obj a noun_phrase(),
    place/time English keys of PLACES/TIMES[tense]: ("we", "wash", the red cups, "past") ->
    ("We washed the red cups.", "Lavamos las tazas rojas.")."""
    if time and time not in TIMES[tense]:
        raise ValueError(f"verb_sentence: {time!r} does not go with the {tense} tense")
    past, infinitive, _ = VERBS[verb]
    es_subject, person = SUBJECTS.get(subject, (subject, "3s"))  # names stay as they are
    if tense == "past":
        en_verb = f"didn't {verb}" if negative else past
    elif negative:
        en_verb = ("doesn't " if person == "3s" else "don't ") + verb
    else:
        en_verb = L.third_person(verb) if person == "3s" else verb
    es_verb = ("no " if negative else "") + conjugate(infinitive, person, tense)
    return (_sentence([subject, en_verb, obj[0], place, time]),
            _sentence([es_subject, es_verb, obj[1], PLACES.get(place, ""),
                       TIMES[tense].get(time, "")]))


def copula_sentence(det, noun: str, adj: str, plural: bool = False, negative: bool = False,
                    attr: str = "") -> tuple[str, str]:
    """"The cups are dirty." -> "Las tazas están sucias.": estar for states (clean, dirty),
    ser for lasting qualities; attr is an optional adjective inside the subject."""
    en_np, es_np = noun_phrase(det, noun, attr, plural)
    be = ("are" if plural else "is") + ("n't" if negative else "")
    es_be = (("es", "son"), ("está", "están"))[ADJS[adj][1] == "state"][plural]
    return (_sentence([en_np, be, adj]),
            _sentence([es_np, "no" if negative else "", es_be,
                       es_adjective(adj, NOUNS[noun][1], plural)]))


def translation_pair(rng: random.Random) -> tuple[str, str]:
    """(english, spanish) for speech translation."""
    plural = rng.random() < 0.5
    if rng.random() < 0.25:  # "The red cups are dirty."
        noun, adj = rng.choice(list(NOUNS)), rng.choice(list(ADJS))
        attrs = [a for a in ADJS if ADJS[a][1] != ADJS[adj][1]]  # no "the red cup is blue"
        attr = rng.choice(attrs) if rng.random() < 0.3 else ""
        return copula_sentence(rng.choice(["the", "my", "this"]), noun, adj, plural,
                               rng.random() < 0.25, attr)
    verb = rng.choice(list(VERBS))
    noun = rng.choice([n for n in NOUNS if NOUNS[n][2] in VERBS[verb][2]])
    det = rng.choice(["the", "the", "a", "my", "this", "count"])
    det = rng.randint(2, 20) if det == "count" else det
    adj = rng.choice(list(ADJS)) if rng.random() < 0.5 else ""
    obj = noun_phrase(det, noun, adj, plural and det != "a")
    subject = rng.choice(_NAMES) if rng.random() < 0.4 else rng.choice(list(SUBJECTS))
    tense = rng.choice(["present", "past"])
    negative = rng.random() < 0.25
    place = rng.choice(list(PLACES)) if rng.random() < 0.4 else ""
    time = rng.choice(list(TIMES[tense])) if rng.random() < 0.5 else ""
    return verb_sentence(subject, verb, obj, tense, negative, place, time)


# ---------------------------------------------------------------- splits
def _qa_draw(rng):
    sents, prompt, text, _ = qa_parts(rng)
    return sents, prompt, text


def _translation_draw(rng):
    en, text = translation_pair(rng)
    return [en], "", text


DRAW = {"sqa": _qa_draw, "ast": _translation_draw}  # task -> rng -> (spoken sentences, prompt, target)


def split_task_texts(task: str, seed: int, n_train: int, n_dev: int, n_test: int,
                     n_test_accent: int) -> dict[str, list[dict]]:
    """Items {"transcript", "prompt", "text"} for every split, deterministic in seed. Items are
    unique after normalize(); no sentence of a held-out passage (sqa) or source (ast) occurs
    in train. Held-out splits are drawn first, each from its own RNG, so they stay the same
    whatever n_train is."""
    if task not in DRAW:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(DRAW)}")
    seen: set = set()  # normalised (transcript, prompt) of every item so far
    held: set[str] = set()  # normalised sentences of held-out transcripts

    def fresh(rng: random.Random, train: bool) -> dict:
        for _ in range(1000):
            sents, prompt, text = DRAW[task](rng)
            keys = [normalize(s) for s in sents]
            key = (" ".join(keys), normalize(prompt))
            if key in seen or (train and not held.isdisjoint(keys)):
                continue
            seen.add(key)
            if not train:
                held.update(keys)
            return {"transcript": " ".join(sents), "prompt": prompt, "text": text}
        raise RuntimeError(f"split_task_texts: {task} exhausted after {len(seen)} items")

    out = {}
    for split, n in (("dev", n_dev), ("test", n_test), ("test_accent", n_test_accent),
                     ("train", n_train)):
        rng = random.Random(f"{seed}/{task}/{split}")  # str seeds are stable across runs
        out[split] = [fresh(rng, split == "train") for _ in range(n)]
    return {split: out[split] for split in ("train", "dev", "test", "test_accent")}
