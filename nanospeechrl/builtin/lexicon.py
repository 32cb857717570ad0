"""English word lists and sentence templates for the built-in corpus (data, plus two
inflection rules). grammar.py turns them into a slot grammar.

Lists are grouped by meaning (things, foods, people, places, ideas ...) so templates can
put plausible words in each slot, and so later tasks (spoken QA, translation) can reuse
the same categories. Words are plain lowercase ASCII (names and cities capitalised).

Homophones are left out on purpose: the audio comes from eSpeak, so two words with the
same pronunciation ("red"/"read", "eight"/"ate", "new"/"knew") could never be told apart
by an ASR model. That is why there is no "read", "eat", "know", "win", "hear", "wear" or
"blow" below; tests check the generator's vocabulary against a list of homophone pairs.
Irregular plurals and past tenses are listed explicitly; the rest follow pluralise() and
third_person().
"""

NAMES_FEMALE = """
Anna Emma Clara Sophie Lucy Alice Olivia Emily Laura Sarah Julia Hannah Maria Nina Lisa
Helen Kate Amy Lily Ruby Ella Zoe Mia Eva Jane Susan Linda Karen Rachel Monica Paula
Nora Vera Diana Fiona Irene Tina Wendy Sandra Martha Olga Greta Heidi Ingrid Maya Sophia
Isabel Victoria Bella Molly Megan Ellen Lena Rita Carmen
""".split()

NAMES_MALE = """
Ben Tom Sam Peter Paul David Daniel Michael Oliver Lucas Leo Adam Henry George Harry
Oscar Felix Hugo Simon Victor Martin Robert Thomas James John Luke Noah Ethan Ryan Kevin
Brian Steven Carl Eric Alan Ivan Pablo Marco Carlos Diego Omar Anton Otto Boris Jonas
Stefan Andrew Edward Philip Walter Arthur Albert Dennis Gordon Patrick Vincent Nathan
""".split()

CITIES = """
London Paris Berlin Madrid Rome Vienna Prague Lisbon Dublin Oslo Stockholm Helsinki
Warsaw Athens Cairo Tokyo Sydney Boston Chicago Denver Dallas Seattle Toronto Montreal
Lima Havana Nairobi Lagos Delhi Mumbai Bangkok Shanghai Manila Jakarta Istanbul Moscow
Budapest Brussels Amsterdam Geneva Zurich Munich Hamburg Milan Venice Naples Barcelona
Valencia Porto Glasgow Manchester Liverpool Bristol Oxford Cambridge Houston Miami
Atlanta Vancouver Melbourne Auckland Copenhagen
""".split()

# Places you go to, meet at or clean ("the park", "the kitchen").
SITES = """
park market station library school kitchen garden office museum hospital bakery
restaurant hotel airport farm river bridge harbour cinema theatre church castle village
forest lake mountain island zoo shop supermarket bank gym stadium street square tower
factory garage bathroom bedroom classroom basement balcony playground studio laboratory
pharmacy bookshop hallway beach hall field valley tunnel cottage
""".split()

# Countable things you can buy, carry, clean or lose.
THINGS = """
cup plate bowl spoon fork knife glass bottle jar box bag basket bucket chair table
desk sofa bed lamp clock mirror window door curtain carpet pillow blanket towel shelf
cupboard fridge oven kettle teapot pan candle vase picture painting poster map book
notebook pencil pen envelope letter stamp card ticket wallet purse key lock phone camera
radio computer keyboard screen printer battery cable torch hammer nail ladder rope brush
broom shovel bicycle car bus train truck boat ship plane tractor helmet coat jacket
shirt sweater dress skirt scarf hat cap glove sock shoe boot belt umbrella suitcase
backpack necklace watch button ribbon ball kite puzzle doll toy drum guitar piano
violin trumpet flute whistle bell balloon flag tent compass globe telescope microscope
magnet ruler newspaper magazine album diary calendar coin gift trophy statue fountain
fence gate engine mask badge sticker label parcel tray jug mug stove heater fan sink
soap sponge comb crayon folder bench stool cushion rug frame wagon pipe barrel crate
cage sandal bracelet pocket
""".split()

# Countable foods ("three apples") and uncountable ones ("some bread").
FOODS = """
apple banana orange lemon pear peach plum grape cherry strawberry melon mango tomato
potato carrot onion cabbage pepper cucumber mushroom egg cake cookie biscuit pie
sandwich pizza sausage pancake muffin lime pumpkin coconut pineapple radish
""".split()
MASS_FOODS = """
bread rice cheese butter soup milk juice coffee tea water honey jam sugar salt pasta
chocolate cream cereal oil
""".split()

ANIMALS = """
cat dog horse cow pig sheep goat duck chicken goose rabbit mouse frog fox wolf bear
lion tiger elephant monkey giraffe zebra camel kangaroo penguin owl eagle parrot swan
whale dolphin shark turtle snake spider butterfly squirrel hedgehog donkey hamster
puppy kitten
""".split()

# People by role; FAMILY words take "my" ("my brother", "my parents").
PEOPLE = """
teacher doctor nurse farmer baker driver pilot artist singer dancer writer painter
student child baby girl boy woman man friend neighbour visitor tourist manager waiter
chef engineer scientist officer guard gardener builder fisherman sailor king queen
prince princess clown captain judge mechanic librarian dentist player actor musician
photographer reporter
""".split()
FAMILY = """
brother sister mother father uncle cousin grandmother grandfather daughter nephew niece
""".split()
FAMILY_GROUPS = """
brothers sisters cousins parents grandparents nephews nieces friends neighbours
""".split()

# Abstract nouns you explain, remember or plan; EVENTS are those that start at a time.
IDEAS = """
idea plan story question answer problem lesson joke secret message reason result choice
chance mistake dream promise rule report exam project decision surprise adventure
journey memory habit goal job task hobby language recipe riddle poem song topic
theory method solution example lecture speech conversation discussion argument
warning
""".split()
EVENTS = """
meeting concert party lesson match festival lecture show game film class wedding
dinner lunch breakfast interview trip race parade ceremony
""".split()

# Verbs as "base past" pairs, grouped by what they take as an object.
VERBS_THING = """
buy bought find found carry carried clean cleaned paint painted open opened close closed
bring brought take took keep kept hold held drop dropped fix fixed build built draw drew
wash washed move moved sell sold lose lost hide hid pack packed fold folded check checked
borrow borrowed lend lent order ordered push pushed pull pulled touch touched fill filled
share shared want wanted need needed like liked love loved use used count counted
collect collected choose chose catch caught lift lifted return returned repair repaired
polish polished wrap wrapped kick kicked sort sorted deliver delivered
shake shook cover covered lock locked measure measured compare compared replace replaced
protect protected forget forgot notice noticed grab grabbed place placed
decorate decorated design designed photograph photographed make made
""".split()
# Base forms of VERBS_THING that make natural commands ("Please close the window.").
COMMAND_VERBS = """
clean open close bring take hold fix wash move pack fold check push pull lock cover carry
paint find keep count sort polish wrap measure protect replace
""".split()
VERBS_FOOD = """
cook cooked bake baked cut cut peel peeled taste tasted slice sliced share shared buy
bought order ordered want wanted like liked love loved bring brought prepare prepared
""".split()
VERBS_PERSON = """
meet met call called help helped visit visited thank thanked invite invited follow
followed watch watched teach taught ask asked tell told greet greeted hug hugged join
joined miss missed forgive forgave trust trusted remind reminded warn warned surprise
surprised admire admired pay paid guide guided save saved wake woke phone phoned
""".split()
VERBS_IDEA = """
explain explained remember remembered discuss discussed finish finished start started
understand understood change changed describe described write wrote repeat repeated
learn learned solve solved study studied prepare prepared enjoy enjoyed plan planned
accept accepted ignore ignored answer answered practise practised organise organised
cancel cancelled support supported imagine imagined suggest suggested recommend
recommended review reviewed improve improved hate hated
""".split()
VERBS_INTRANS = """
smile smiled laugh laughed wait waited jump jumped dance danced sing sang rest rested
work worked play played shout shouted whisper whispered listen listened cry cried
climb climbed sit sat stand stood stay stayed fall fell relax relaxed cough coughed
sneeze sneezed yawn yawned cheer cheered clap clapped agree agreed complain complained
knock knocked wave waved skate skated float floated breathe breathed nod nodded blink
blinked shiver shivered giggle giggled sleep slept hurry hurried
""".split()
VERBS_MOTION = """
go went come came drive drove fly flew walk walked run ran cycle cycled travel travelled
return returned move moved swim swam sail sailed hurry hurried
""".split()

ADJ_THING = """
big small large tiny heavy light long short old new clean dirty empty full soft hard
warm cold hot cool dry wet round square flat sharp smooth rough thick thin bright dark
quiet loud cheap expensive simple strange famous broken shiny plastic wooden metal
cotton woollen leather silver golden striped spotted fancy ugly pretty beautiful lovely
perfect modern ancient fragile sturdy narrow wide deep huge tidy messy useful special
ordinary precious dusty colourful
""".split()
ADJ_FOOD = """
fresh ripe sweet sour salty spicy delicious tasty crunchy juicy warm cold hot small big
""".split()
ADJ_PERSON = """
happy sad tired busy angry calm brave kind clever friendly polite patient shy proud
lucky hungry thirsty sleepy nervous curious careful cheerful honest funny serious
young strong gentle lazy rude rich generous grumpy excited worried bored surprised
smart healthy confident lonely relaxed jealous silly wise tall quiet
""".split()
ADJ_IDEA = """
difficult easy important interesting boring strange long short simple complicated clear
wonderful terrible excellent awful good bad great fantastic amazing surprising exciting
dangerous popular unusual brilliant obvious familiar clever useful silly secret
""".split()
WEATHER = "sunny cloudy rainy windy foggy warm cold hot snowy stormy".split()

ADVERBS = """
quickly slowly carefully quietly loudly gently happily sadly calmly softly easily
neatly politely proudly kindly bravely suddenly finally patiently nervously eagerly
angrily warmly honestly clearly simply badly silently safely firmly lightly openly
secretly cheerfully lazily wisely rudely smoothly tightly boldly
""".split()

COLOURS = "red blue green yellow black white brown grey orange purple pink".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = """
January February March April May June July August September October November December
""".split()
DAY_PARTS = "morning afternoon evening".split()

# Number words: number_words() in grammar.py builds every number from these.
ONES = """
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
fifteen sixteen seventeen eighteen nineteen
""".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()  # index = tens digit

# Sentence templates by shape. {slot}s are defined in grammar.GRAMMAR; grammar.sentence() picks a
# shape uniformly, then one of its templates. Suffixes: _v base verb, _s he/she form, _ed past,
# _opt may be empty; subj3 takes he/she verbs, subjp takes plural ones.
SHAPES: dict[str, list[str]] = {
    "statement": [
        "{subj} {adv_opt} {thing_ed} {np} {place_opt} {past_opt}.",
        "{subj3} {thing_s} {np} {habit}.",
        "{subjp} {thing_v} {np} {habit}.",
        "{subj} will {thing_v} {np} {future}.",
        "{subj} {food_ed} {food_np} {past_opt}.",
        "{subj} {person_ed} {obj} {place} {past_opt}.",
        "{subj} {idea_ed} the {adj_idea_opt} {idea} {past_opt}.",
        "{subj} {intr_ed} {adv} {place_opt}.",
        "{subj} {motion_ed} to the {site} {past}.",
        "The {desc} {thing} {place} is {adj_thing}.",
        "The {animals} {intr_ed} {adv_opt} {place}.",
        "It was {weather} in {city} {past}.",
    ],
    "question": [
        "Where did {subj} {thing_v} the {desc} {thing}?",
        "What did {subj} {food_v} {past}?",
        "Who {thing_ed} the {desc} {thing} {place_opt}?",
        "When does the {event} start?",
        "Why is the {thing} so {adj_thing}?",
        "Which {thing} did {name} {thing_v} {past_opt}?",
        "Did {subj} {thing_v} the {desc} {thing} {past_opt}?",
        "Is the {desc} {thing} {place} {adj_thing}?",
        "Are there any {things} in the {site}?",
        "Can you {thing_v} the {desc} {thing} {adv_opt}?",
        "Will {subj} {motion_v} to {city} {future}?",
        "Does {subj3} {idea_v} the {idea}?",
        "Who {person_ed} {obj} at the {site} {past_opt}?",
        "How much does the {desc} {thing} cost?",
        "Was the {adj_idea_opt} {event} in {city} {adj_idea}?",
    ],
    "number": [
        "{subj} {thing_ed} {count} {desc} {things} {past_opt}.",
        "There are {count} {desc} {things} in the {site}.",
        "{subj3} has {count} {adj_food_opt} {foods} and {count} {animals}.",
        "The {desc} {thing} costs {price}.",
        "{subj} paid {price} at the {site} {past_opt}.",
        "The {event} starts at {clock} {future_opt}.",
        "{subj} {motion_ed} home at {clock}.",
        "{name} was born in {city} in {year}.",
        "{subj} moved to {city} in {year}.",
        "How many {things} did {subj} {thing_v} {past_opt}?",
        "The {site} is {count} minutes from the {site}.",
        "There were {bignum} {persons} at the {event}.",
        "{name} counted {bignum} {things} in the {site}.",
        "The last {transport} leaves at {clock}.",
        "{subj} will meet {obj} at {clock} on {day}.",
    ],
    "list": [
        "{subj} {thing_ed} {item}, {item} and {item}.",
        "{subj} {food_ed} {food_np}, {food_np} and {food_np}.",
        "We need {item}, {item}, {item} and {item}.",
        "{name}, {name} and {name} {motion_ed} to {city} {past_opt}.",
        "{subj} visited {city}, {city} and {city} {past_opt}.",
        "The {site} sells {things}, {things}, {foods} and {mass}.",
        "My {families} are {adj_person}, {adj_person} and {adj_person}.",
    ],
    "negation": [
        "{subj} didn't {thing_v} the {desc} {thing} {past_opt}.",
        "{subj3} doesn't {food_v} {foods}.",
        "{subjp} don't {intr_v} {place} {habit_opt}.",
        "The {desc} {thing} isn't {adj_thing}.",
        "{subj} won't {person_v} {obj} {future_opt}.",
        "{subj} can't find the {desc} {thing}.",
        "{subj3} wasn't {adj_person} {past_opt}.",
        "It's not {weather} in {city} today.",
        "{subj} never {idea_ed} the {idea}.",
    ],
    "names": [
        "{name} and {name} {person_ed} the {person} in {city}.",
        "{name} {person_ed} {name} {place} {past_opt}.",
        "My {family} {name} works as a {person} in {city}.",
        "{name} told {name} a {adj_idea} {idea} {past_opt}.",
        "{name} is a {adj_person} {person} from {city}.",
        "{name} gave {name} {item} {past_opt}.",
        "{name_f} and her {family} {motion_ed} to {city} {past_opt}.",
        "{name_m} and his {families} {motion_ed} to {city} {past_opt}.",
    ],
    "command": [
        "Please {cmd_v} the {desc} {thing}.",
        "{cmd_v} the {thing} {adv}!",
        "Don't {cmd_v} the {desc} {thing}!",
        "Put the {thing} {prep} the {thing}.",
        "Bring me {count} {things}, please.",
        "Let's {motion_v} to the {site} {future_opt}.",
        "Meet me at the {site} at {clock}.",
        "Please don't {intr_v} in the {site}.",
        "{person_v} {obj} {adv}, please!",
    ],
    "compound": [
        "{name} {intr_ed}.",
        "{name} is {adj_person}.",
        "It's {weather} today.",
        "{subj} {intr_ed} {adv} {place}.",
        "{subj} wanted to {motion_v} to {city}, but the {transport} was late.",
        "After the {event}, {subj} {motion_ed} home.",
        "{subj} {thing_ed} the {thing} and then {intr_ed}.",
        "When the {event} ended, {subj} {intr_ed} {adv}.",
        "{subj3} was {adj_person} because the {idea} was {adj_idea}.",
    ],
}

PLURAL_EXCEPTIONS = {
    "child": "children", "man": "men", "woman": "women", "fisherman": "fishermen",
    "mouse": "mice", "goose": "geese", "sheep": "sheep", "fish": "fish",
    "knife": "knives", "shelf": "shelves", "scarf": "scarves", "wolf": "wolves",
    "potato": "potatoes", "tomato": "tomatoes", "mango": "mangoes",
}
THIRD_PERSON_EXCEPTIONS = {"have": "has", "do": "does", "go": "goes", "be": "is"}
VOWELS = "aeiou"


def pluralise(noun: str) -> str:
    """cup -> cups, box -> boxes, cherry -> cherries, child -> children."""
    if noun in PLURAL_EXCEPTIONS:
        return PLURAL_EXCEPTIONS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    """walk -> walks, watch -> watches, carry -> carries, go -> goes (he/she/it form)."""
    if verb in THIRD_PERSON_EXCEPTIONS:
        return THIRD_PERSON_EXCEPTIONS[verb]
    return pluralise(verb)  # the same spelling rules as plural nouns


def pairs(words: list[str]) -> list[tuple[str, str]]:
    """["walk", "walked", "run", "ran"] -> [("walk", "walked"), ("run", "ran")], de-duplicated."""
    return list(dict.fromkeys(zip(words[0::2], words[1::2])))
