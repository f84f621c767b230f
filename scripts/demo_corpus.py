"""Deterministic generator of the training corpus for the built-in demo model.

llmbuilder-cli ships a tiny (about 2-3M parameter) GPT model as a built-in demo. This script writes the
text that model is trained on: short English children's stories and fables, assembled entirely from the
templates and word lists in this file (no third-party text, nothing downloaded, standard library only).

A tiny model has to learn grammar from this text, not facts, so the stories are short, simple and coherent:
one named hero whose kind and pronouns never change, often a second character, an object or goal that is
introduced early and referred back to, a clear arc (setup, problem, attempts, resolution) and a closing
sentence. The vocabulary is deliberately small (roughly a thousand distinct words).

The output is deterministic: the same --seed and --count give byte-identical output on any machine with
Python >= 3.10. Only one ``random.Random(seed)`` instance is used, passed around explicitly (never the
global generator, ``hash()``, set iteration, the clock or the environment). Bump CORPUS_VERSION whenever
the output for a given seed changes.

Usage:
    python scripts/demo_corpus.py --seed 1234 --count 20000 --out corpus.txt --stats
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass

CORPUS_VERSION = 1

# ---------------------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------------------

GIRL_NAMES = (
    "Mia", "Lily", "Emma", "Anna", "Lucy", "Ella", "Rosa", "Zoe", "Ruby", "Sara",
    "Maya", "Nora", "Lola", "Ivy", "Amy", "Kate", "Molly", "Hana", "Tina", "Bella",
    "Ada", "Nina", "Jane", "Ellie", "Lena", "Gina", "Meg", "Sofia", "Leah", "Pia",
)
BOY_NAMES = (
    "Sam", "Tom", "Ben", "Max", "Leo", "Jack", "Finn", "Tim", "Noah", "Oscar",
    "Eli", "Jake", "Ned", "Bob", "Dan", "Luke", "Ravi", "Omar", "Hugo", "Theo",
    "Toby", "Milo", "Otto", "Pete", "Ali", "Kai", "Ted", "Joe", "Ray", "Adam",
)
PET_NAMES = ("Buddy", "Spot", "Patch", "Pepper", "Biscuit", "Coco", "Sunny", "Fluffy", "Bingo", "Socks", "Peanut")

HUMAN_KINDS = ("girl", "boy")

# kind -> (habitat, home noun, home descriptions, how it moves (past tense), what it looks like)
KINDS = {
    "girl": ("town", "house",
             ("a little yellow house", "a small house with a red door", "a white house near the park"),
             "ran", ("curly brown hair", "a big bright smile", "two long braids", "rosy red cheeks")),
    "boy": ("town", "house",
            ("a little yellow house", "a small house with a green door", "a white house near the park"),
            "ran", ("curly red hair", "a big bright smile", "messy brown hair", "rosy red cheeks")),
    "rabbit": ("forest", "burrow", ("a cozy burrow under a hill", "a warm burrow under an old tree"),
               "hopped", ("soft white fur", "long floppy ears", "a fluffy little tail")),
    "fox": ("forest", "den", ("a warm den under an old tree", "a snug den near the river"),
            "ran", ("a bushy orange tail", "bright orange fur", "pointy black ears")),
    "bear": ("forest", "cave", ("a big cave on the hill", "a cozy cave near the river"),
             "walked", ("thick brown fur", "big soft paws", "a round black nose")),
    "mouse": ("farm", "nest", ("a tiny nest in the corner of the barn", "a little hole under the stairs"),
              "ran", ("tiny pink ears", "soft gray fur", "a long thin tail")),
    "owl": ("forest", "nest", ("a nest high in an old oak tree", "a hole in a tall tree"),
            "flew", ("big round eyes", "soft brown feathers")),
    "cat": ("town", "house", ("a little house with a red door", "a small house at the end of the road"),
            "ran", ("soft gray fur", "long white whiskers", "bright green eyes")),
    "dog": ("town", "house", ("a little house with a big yard", "a small house near the park"),
            "ran", ("floppy brown ears", "a waggy tail", "a shiny black nose")),
    "duck": ("pond", "nest", ("a soft nest by the pond", "a nest in the tall reeds"),
             "waddled", ("shiny yellow feathers", "orange feet", "a flat orange bill")),
    "frog": ("pond", "pond", ("a green pond full of lily pads", "a little pond near the woods"),
             "hopped", ("bright green skin", "big round eyes", "long strong legs")),
    "turtle": ("pond", "pond", ("a quiet pond with a big flat rock", "a muddy pond near the woods"),
               "walked", ("a hard green shell", "a small round head")),
    "bird": ("forest", "nest", ("a little nest in a tall tree", "a nest in an apple tree"),
             "flew", ("bright blue feathers", "a little yellow beak")),
    "squirrel": ("forest", "tree", ("a hole in a big oak tree", "a snug nest in a pine tree"),
                 "ran", ("a big fluffy tail", "quick little paws")),
    "lamb": ("farm", "barn", ("a red barn on a green hill", "a warm barn on a little farm"),
             "ran", ("soft white wool", "a little black nose")),
    "pig": ("farm", "pen", ("a muddy pen on a little farm", "a warm pen next to the barn"),
            "ran", ("pink skin", "a curly little tail", "a round pink nose")),
    "goat": ("farm", "barn", ("a little barn on a rocky hill", "a red barn near the field"),
             "ran", ("two little horns", "a white beard")),
    "hedgehog": ("forest", "nest", ("a nest of dry leaves under a bush", "a snug nest under a hedge"),
                 "ran", ("little brown spikes", "a pointy nose")),
}
KIND_NAMES = tuple(KINDS)
ANIMAL_KINDS = tuple(k for k in KIND_NAMES if k not in HUMAN_KINDS)

# habitat -> ("in ..." phrase, short noun for referring back)
HABITATS = {
    "town": (("in a small village", "village"), ("in a little town", "town"),
             ("in a small village by the sea", "village"), ("in a quiet town near the hills", "town"),
             ("in a busy little town", "town")),
    "forest": (("in a big green forest", "forest"), ("in a quiet forest", "forest"), ("in a sunny meadow", "meadow"),
               ("in a green valley", "valley"), ("in the deep woods", "woods"),
               ("in a forest full of tall trees", "forest")),
    "pond": (("by a quiet pond", "pond"), ("by a little pond near the woods", "pond"),
             ("in a pond full of lily pads", "pond"), ("by a big blue lake", "lake")),
    "farm": (("on a little farm", "farm"), ("on a big farm on a hill", "farm"), ("on a farm near the river", "farm")),
}

HERO_ADJS = ("little", "small", "young", "happy", "curious", "kind", "clever", "cheerful", "playful", "gentle")
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "brown", "gray")
ONE_DAY = ("One day", "One morning", "One afternoon", "One sunny day", "One fine day", "One bright morning",
           "One warm afternoon")
MORNINGS = ("One sunny morning", "One bright morning", "One fine morning", "One warm morning", "One quiet morning")

# (infinitive, simple past) of things a hero loves to do
LOVES = (
    ("play by the river", "played by the river"), ("sing happy songs", "sang happy songs"),
    ("run in the tall grass", "ran in the tall grass"), ("look at the clouds", "looked at the clouds"),
    ("pick pretty flowers", "picked pretty flowers"), ("jump in puddles", "jumped in puddles"),
    ("read picture books", "read picture books"), ("dance in the sun", "danced in the sun"),
    ("build little houses out of sticks", "built little houses out of sticks"), ("draw pictures", "drew pictures"),
    ("play hide and seek", "played hide and seek"), ("splash in the pond", "splashed in the pond"),
    ("roll down the hill", "rolled down the hill"), ("collect pretty stones", "collected pretty stones"),
    ("tell funny jokes", "told funny jokes"), ("watch the birds", "watched the birds"),
)

LOST_THINGS = ("ball", "hat", "scarf", "ribbon", "mitten", "toy boat", "toy car", "book", "bucket", "umbrella",
               "cap", "bag", "kite", "teddy bear", "drum")
# (place, preposition used with it)
PLAY_PLACES = (("the park", "in"), ("the meadow", "in"), ("the garden", "in"), ("the field", "in"),
               ("the woods", "in"), ("the hill", "on"), ("the playground", "on"))
TOWN_PLACES = ("the park", "the playground")
OUTDOOR_SPOTS = ("behind the big tree", "under the bushes", "by the pond", "near the gate", "under the bench",
                 "behind a big rock", "in the flower bed")
OUTDOOR_FOUND = ("in the tall grass", "under a pile of leaves", "next to a big gray rock",
                 "under a bush with red berries", "at the bottom of the slide", "by the old wooden fence")
INDOOR_SPOTS = ("under {his} bed", "behind the door", "in the toy box", "under the table", "in the kitchen",
                "behind the big chair", "on the shelf")
INDOOR_FOUND = ("under a pillow on the sofa", "in the laundry basket", "in {his} coat pocket", "behind the curtains",
                "inside {his} boot", "under a pile of blankets")

SHARE_ITEMS = (
    # (what, short plural, food?, what they did together)
    ("basket of red apples", "apples", True, "ate the juicy apples together"),
    ("big bag of cherries", "cherries", True, "ate the sweet cherries together"),
    ("plate of warm cookies", "cookies", True, "ate the cookies together"),
    ("bowl of sweet strawberries", "strawberries", True, "ate the strawberries together"),
    ("box of new crayons", "crayons", False, "drew pretty pictures with the crayons"),
    ("bag of shiny marbles", "marbles", False, "played with the marbles all afternoon"),
    ("box of wooden blocks", "blocks", False, "built a tall tower with the blocks"),
)
GAMES = ("hide and seek", "tag", "catch", "leapfrog", "a game of ball", "follow the leader")
HIDE_SPOTS = ("the big bushes", "the old barn", "a big tree", "the garden wall", "the tall grass")
CAKES = ("chocolate cake", "strawberry cake", "big cake with pink icing", "lemon cake", "carrot cake")
NUMBERS = ("five", "six", "seven", "eight")

SNACKS = ("apple", "pear", "carrot", "piece of bread", "sandwich", "bunch of grapes", "piece of cheese")
LANDMARKS = ("big old windmill", "little blue bridge", "tall pine tree", "old stone wall", "round duck pond",
             "big red barn")


# ---------------------------------------------------------------------------------------------------------
# Grammar helpers
# ---------------------------------------------------------------------------------------------------------

_A_BEFORE = ("uni", "use", "usu", "one", "once", "eu")  # vowel letter, consonant sound: "a unicorn"
_AN_BEFORE = ("hour", "honest", "honor")  # silent h: "an hour"
_ARTICLE_RE = re.compile(r"\b([Aa])n? (?=([A-Za-z]+))")
_CAPITALIZE_RE = re.compile(r'(^"?|[.!?] "?|[,:] ")([a-z])')


def article(word: str) -> str:
    """Return "a" or "an" for the word that follows the article."""
    w = word.lower()
    if w.startswith(_A_BEFORE):
        return "a"
    if w.startswith(_AN_BEFORE):
        return "an"
    return "an" if w[:1] in ("a", "e", "i", "o", "u") else "a"


def fix_articles(text: str) -> str:
    """Make every "a"/"an" agree with the word after it ("a owl" -> "an owl", "an red" -> "a red")."""

    def repl(m: re.Match) -> str:
        art = article(m.group(2))
        return (art.capitalize() if m.group(1) == "A" else art) + " "

    return _ARTICLE_RE.sub(repl, text)


def capitalize_sentences(text: str) -> str:
    """Capitalise the first letter of the text, of each sentence, and of each quotation that opens a sentence."""
    return _CAPITALIZE_RE.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def polish(paragraph: str) -> str:
    """Turn backtick quotes into ASCII double quotes and fix articles, capitals and spacing."""
    text = paragraph.replace("`", '"')
    text = re.sub(r" {2,}", " ", text).strip()
    text = re.sub(r" ([,.!?])", r"\1", text)
    return capitalize_sentences(fix_articles(text))


def cap(text: str) -> str:
    """Capitalise the first letter of a phrase ("the old owl" -> "The old owl")."""
    return text[:1].upper() + text[1:]


def pick_distinct(rng: random.Random, options: tuple | list, k: int) -> list:
    """Pick k different items from options, in random order (using only rng.choice)."""
    pool = list(options)
    out = []
    for _ in range(min(k, len(pool))):
        item = rng.choice(pool)
        pool.remove(item)
        out.append(item)
    return out


def without_kind(options: tuple | list, kind: str) -> list:
    """Drop options that mention the hero's kind (so a goat never feeds the goats)."""
    pattern = re.compile(r"\b" + kind + r"s?\b")
    return [o for o in options if not pattern.search(o if isinstance(o, str) else " ".join(map(str, o)))]


# ---------------------------------------------------------------------------------------------------------
# Characters and the story builder
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Character:
    """Someone in a story: how the text names them, what they are, and which pronouns they take."""

    name: str
    kind: str
    female: bool


def character_keys(prefix: str, ch: Character) -> dict:
    """Template keys for a character: {name} {Name} {he} {He} {his} {His} {him} {self} {kind}, with a prefix."""
    he, his, him, self_ = ("she", "her", "her", "herself") if ch.female else ("he", "his", "him", "himself")
    return {
        prefix + "name": ch.name, prefix + "Name": cap(ch.name), prefix + "he": he, prefix + "He": cap(he),
        prefix + "his": his, prefix + "His": cap(his), prefix + "him": him, prefix + "self": self_,
        prefix + "kind": ch.kind,
    }


class Teller:
    """Collects the sentences of one story, filling templates from a shared context of keys."""

    def __init__(self, rng: random.Random) -> None:
        """Start an empty story with a freshly chosen hero and setting."""
        self.rng = rng
        self.ctx: dict = {}
        self.paras: list[list[str]] = [[]]
        kind = rng.choice(KIND_NAMES)
        female = kind == "girl" or (kind != "boy" and rng.random() < 0.5)
        self.hero = Character(rng.choice(GIRL_NAMES if female else BOY_NAMES), kind, female)
        self.names_used = [self.hero.name]
        habitat, home, home_descs, move, looks = KINDS[kind]
        where, land = rng.choice(HABITATS[habitat])
        human = kind in HUMAN_KINDS
        self.ctx.update(character_keys("", self.hero))
        self.ctx.update(
            where=where, Where=cap(where), land=land, at_land=f"{where.split()[0]} the {land}",
            home=home, home_desc=rng.choice(home_descs), went=move,
            looks=looks, human=human, folk="children" if human else "animals",
            young="little " + kind, oneday=rng.choice(ONE_DAY),
        )

    @property
    def human(self) -> bool:
        """Whether the hero is a child rather than an animal."""
        return self.ctx["human"]

    def choice(self, options):
        """Pick one option."""
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self.rng.random() < p

    def fill(self, template: str) -> str:
        """Fill a template from the context (twice, so values may themselves hold keys like {his})."""
        text = template.format(**self.ctx)
        return text.format(**self.ctx) if "{" in text else text

    def add(self, *options: str) -> None:
        """Add one of the given sentence templates to the current paragraph."""
        self.paras[-1].append(self.fill(options[0] if len(options) == 1 else self.rng.choice(options)))

    def maybe(self, p: float, *options: str) -> bool:
        """With probability p, add one of the templates; return whether one was added."""
        if self.rng.random() < p:
            self.add(*options)
            return True
        return False

    def para(self) -> None:
        """Start a new paragraph (no-op if the current one is empty)."""
        if self.paras[-1]:
            self.paras.append([])

    def new_name(self, female: bool) -> str:
        """A name not yet used in this story."""
        names = [n for n in (GIRL_NAMES if female else BOY_NAMES) if n not in self.names_used]
        name = self.rng.choice(names)
        self.names_used.append(name)
        return name

    def cast(self, prefix: str, ch: Character) -> Character:
        """Register a character's template keys under prefix."""
        self.ctx.update(character_keys(prefix, ch))
        return ch

    def friend(self, prefix: str = "f", kinds: tuple | list | None = None) -> Character:
        """Add a named friend: a child for a child hero, another kind of animal for an animal hero."""
        if kinds is None:
            kinds = HUMAN_KINDS if self.human else [k for k in ANIMAL_KINDS if k != self.hero.kind]
        kind = self.rng.choice(kinds)
        female = kind == "girl" or (kind != "boy" and self.rng.random() < 0.5)
        ch = self.cast(prefix, Character(self.new_name(female), kind, female))
        human = kind in HUMAN_KINDS
        self.ctx[prefix + "who"] = f"a {kind} named {ch.name}" if human else f"{ch.name} the {kind}"
        self.ctx[prefix + "intro"] = f"a {kind} named {ch.name}"
        self.ctx[prefix + "first"] = "{his} friend " + ch.name
        return ch

    def elder(self, prefix: str = "e", roles: tuple = ("mom", "dad", "grandma", "grandpa")) -> Character:
        """Add a parent or grandparent: {ename} (what they are called), {erel} ("mom") and {ecall} ("Mom")."""
        role = self.rng.choice(roles)
        call = {"mom": "Mom", "dad": "Dad", "grandma": "Grandma", "grandpa": "Grandpa"}[role]
        if not self.human:
            call = {"mom": "Mama", "dad": "Papa"}.get(role, call)
        name = f"{call} {cap(self.hero.kind)}" if not self.human and self.rng.random() < 0.5 else call
        ch = self.cast(prefix, Character(name, self.hero.kind, role in ("mom", "grandma")))
        self.ctx[prefix + "rel"] = role
        self.ctx[prefix + "call"] = call
        self.ctx[prefix + "first"] = name
        return ch

    def helper(self, prefix: str = "h") -> Character:
        """Add a wise old animal, referred to as "the old owl" (never the hero's own kind)."""
        options = [o for o in (("owl", "old"), ("turtle", "wise old"), ("bear", "big kind"), ("goose", "old gray"),
                               ("horse", "old brown")) if o[0] != self.hero.kind]
        kind, adj = self.rng.choice(options)
        ch = self.cast(prefix, Character(f"the {adj} {kind}", kind, self.rng.random() < 0.5))
        self.ctx[prefix + "short"] = f"the {kind}"
        return ch

    def render(self) -> str:
        """The finished story: paragraphs separated by single newlines."""
        return "\n".join(polish(" ".join(p)) for p in self.paras if p)


# ---------------------------------------------------------------------------------------------------------
# Openings and shared pieces
# ---------------------------------------------------------------------------------------------------------


def intro(t: Teller, adjs: tuple = HERO_ADJS, mornings: tuple = MORNINGS, extras: float = 1.0) -> None:
    """Open the story by introducing the hero; about 45% of openings are "Once upon a time"."""
    c = t.ctx
    c["adj"] = t.choice(adjs)
    love, love2 = pick_distinct(t.rng, LOVES, 2)
    c["love"], c["love_past"], c["love2"] = love[0], love[1], love2[0]
    animal = not t.human
    c["opened_in_morning"] = False
    r = t.rng.random()
    if r < 0.45:
        opts = [
            "Once upon a time, there was a {adj} {kind} named {name}.",
            "Once upon a time, there was a {adj} {kind} named {name} who lived {where}.",
            "Once upon a time, {where}, there lived a {adj} {kind} named {name}.",
            "Once upon a time, a {adj} {kind} named {name} lived {where}.",
            "Once upon a time, there lived a {adj} {kind} called {name}.",
            "Once upon a time, {where}, there was a {adj} {kind}. {His} name was {name}.",
            "Once upon a time, in a land far away, there lived a {adj} {kind} named {name}.",
            "Once upon a time, a {adj} {kind} named {name} lived in {home_desc}.",
            "Once upon a time, {where}, there lived a {adj} {kind} who loved to {love}. {His} name was {name}.",
        ]
        if animal:
            opts += ["Once upon a time, {name} the {kind} lived {where}.",
                     "Once upon a time, {where}, lived {name} the {adj} {kind}."]
        t.add(*opts)
    elif r < 0.55 and mornings:
        c["when"] = t.choice(mornings)
        c["oneday"] = t.choice(("After breakfast", "That morning", "Later that morning"))
        c["opened_in_morning"] = True
        opts = ["{when}, a {adj} {kind} named {name} woke up with a smile.",
                "{when}, a {adj} {kind} named {name} jumped out of bed.",
                "{when}, a {adj} {kind} named {name} woke up early."]
        if animal:
            opts.append("{when}, {name} the {adj} {kind} opened {his} eyes and stretched.")
        t.add(*opts)
    else:
        opts = [
            "There once was a {adj} {kind} named {name}.",
            "There once was a {adj} {kind} named {name} who lived {where}.",
            "There was once a {adj} {kind} called {name}.",
            "Long ago, {where}, there lived a {adj} {kind} named {name}.",
            "Long ago, there was a {adj} {kind} named {name}.",
            "{Where}, there lived a {adj} {kind} named {name}.",
            "Far away, {where}, lived a {adj} {kind} named {name}.",
            "{Name} was a {adj} {kind} who lived {where}.",
            "{Name} was a {adj} {kind} who lived in {home_desc}.",
            "This is a story about a {adj} {kind} named {name}.",
            "Not so long ago, a {adj} {kind} named {name} lived {where}.",
        ]
        opts.append("Every day, {name} the {adj} {kind} {love_past}." if animal
                    else "Every day, a {adj} {kind} named {name} {love_past}.")
        t.add(*opts)
    if extras <= 0:
        return
    if t.chance(0.3 * extras):
        looks = pick_distinct(t.rng, c["looks"], 2)
        c["look1"], c["look2"] = looks[0], looks[-1]
        t.add("{He} had {look1} and {look2}." if len(looks) > 1 else "{He} had {look1}.")
    t.maybe(0.4 * extras, "{He} loved to {love2}.", "More than anything, {name} loved to {love2}.",
            "{His} favorite thing to do was to {love2}.")


def set_place(t: Teller) -> None:
    """Choose an outdoor play place: {place} ("the park") and {at_place} ("in the park")."""
    place, prep = t.choice(PLAY_PLACES if t.human else [p for p in PLAY_PLACES if p[0] not in TOWN_PLACES])
    t.ctx.update(place=place, at_place=f"{prep} {place}")


# ---------------------------------------------------------------------------------------------------------
# Plots: one function per plot type, each fills a Teller
# ---------------------------------------------------------------------------------------------------------


def plot_lost_object(t: Teller) -> None:
    """A favourite thing goes missing; the hero searches, gets help and finds it."""
    c = t.ctx
    c.update(thing=t.choice(LOST_THINGS), color=t.choice(COLORS))
    outdoors = t.chance(0.5)
    if t.chance(0.5):
        t.friend("x")
    else:
        t.elder("x")
    intro(t, extras=0.5)
    t.add("{He} had a {color} {thing} that {he} loved very much.",
          "{His} favorite thing in the whole world was a {color} {thing}.",
          "{Name} had a {color} {thing}. It was a present from {his} grandma.",
          "{Name} had a little {color} {thing}, and {he} took it everywhere.")
    t.para()
    if outdoors:
        set_place(t)
        t.add("{oneday}, {name} took {his} {thing} to {place}.",
              "{oneday}, {name} went to play {at_place} with {his} {color} {thing}.")
        t.maybe(0.4, "The sun was warm, and the sky was blue.", "{He} played there for a long time.")
        t.add("When it was time to go home, the {thing} was gone!",
              "But when {he} looked around, {his} {thing} was not there!")
        spots = OUTDOOR_SPOTS
    else:
        t.add("{oneday}, {name} wanted to play with {his} {thing}. But {he} could not find it anywhere!",
              "{oneday}, {name} looked for {his} {color} {thing}, but it was not in its place.",
              "{oneday}, {name} went to get {his} {thing}. But it was gone!")
        spots = INDOOR_SPOTS
    t.maybe(0.6, "`Oh no!` cried {name}. `Where is my {thing}?`", "`My {thing} is lost!` said {name} sadly.")
    t.para()
    c["spot1"], c["spot2"] = pick_distinct(t.rng, spots, 2)
    t.maybe(0.6, "{He} looked {spot1}. {He} looked {spot2}. But the {thing} was not there.",
            "{Name} looked {spot1} and {spot2}, but {he} could not find it.")
    t.add("{Name} went to {xfirst}. `I lost my {color} {thing},` {he} said. `Can you help me?`",
          "`Can you help me find my {thing}?` {name} asked {xfirst}.")
    t.add("`Of course,` said {xname}. `Let us look together.`",
          "`Do not worry,` said {xname}. `We will find it.`")
    t.para()
    if outdoors:
        c["found"] = t.choice(OUTDOOR_FOUND)
        t.maybe(0.5, "They went back to {place} and looked everywhere.", "They walked back to {place} together.")
        t.add("Then {xname} saw something {color} {found}. It was the {thing}!",
              "At last, {name} saw something {color} {found}. It was {his} {thing}!")
    else:
        c["found"] = t.choice(INDOOR_FOUND)
        t.maybe(0.5, "They looked in every room of the {home}.", "They looked high and low.")
        t.add("At last, {xname} found the {color} {thing} {found}!", "Then {name} saw it. The {thing} was {found}!")
    t.add("`My {thing}!` shouted {name}, and {he} gave {xname} a big hug.",
          "{Name} jumped for joy. `Thank you, {xname}!` {he} said.",
          "{Name} held the {thing} tight. `Thank you for helping me,` {he} said.")
    t.add("From that day on, {name} took good care of {his} {color} {thing}.",
          "That night, {name} went to sleep with the {color} {thing} right next to {him}.",
          "{Name} was so happy to have {his} {thing} back, and {he} never lost it again.",
          "From then on, {name} always put {his} {thing} in a safe place.")


def plot_help_friend(t: Teller) -> None:
    """A friend is in trouble; the hero tries, thinks of a better way, and helps."""
    c = t.ctx
    t.friend()
    t.helper()
    set_place(t)
    c.update(color=t.choice(COLORS), game=t.choice(GAMES))
    intro(t)
    known = t.maybe(0.5, "{His} best friend was {fwho}.", "{Name} had a good friend named {fname}.")
    if known:
        t.maybe(0.4, "They liked to play {game} together.")
    t.para()
    if known:
        t.add("{oneday}, {name} went to find {fname} {at_place}. {fHe} was sitting all alone, and {fhe} looked sad.",
              "{oneday}, {name} heard someone crying {at_place}. It was {fname}!")
    else:
        t.add("{oneday}, {name} heard someone crying {at_place}. It was {fintro}.",
              "{oneday}, {name} was walking {at_place} when {he} saw {fintro}. {fHe} looked very sad.")
    t.add("`What is wrong?` asked {name}.", "`Why are you sad?` asked {name}.", "`Can I help you?` asked {name}.")
    trouble = t.choice(("kite", "hole", "leg", "ball", "lost"))
    swimmer = t.hero.kind in ("duck", "frog", "turtle")
    if trouble == "kite":
        t.add("`My {color} kite is stuck in that tall tree,` said {fname}. `I cannot reach it.`")
        t.para()
        t.add("{Name} jumped as high as {he} could, but the kite was too high.",
              "{Name} shook the tree, but the kite did not move.")
        t.add("Then {he} had an idea.", "{Name} thought and thought. Then {he} had an idea.")
        t.add("{He} found a long stick and gently pushed the kite free. It floated down into {fname}'s arms.",
              "{He} asked {hname} for help, and {hshort} reached up high and pulled the {color} kite down.")
        t.add("{fName} held {fhis} kite tight and smiled a big smile.")
    elif trouble == "hole":
        t.add("`I fell into this deep hole, and I cannot climb out,` said {fname}.")
        t.para()
        t.add("{Name} reached down, but {his} arms were too short.",
              "{Name} tried to reach {fname}, but the hole was too deep.")
        t.add("Then {he} had an idea.", "{Name} looked around. Then {he} had an idea.")
        t.add("{He} found a long, strong rope. {He} tied one end to a tree and threw the other end down into the hole.")
        t.add("{fName} held on tight, and {name} pulled and pulled. At last, {fname} was out!")
    elif trouble == "leg":
        t.add("`I hurt my leg, and I cannot walk home,` said {fname}.")
        t.para()
        t.add("{Name} tried to carry {fname}, but {fhe} was too heavy.", "{Name} did not know what to do at first.")
        t.add("Then {he} had an idea.", "{Name} thought for a moment. Then {he} had an idea.")
        t.add("{He} let {fname} lean on {him}, and they walked home slowly, one step at a time.")
        t.add("{fName}'s mom put a bandage on {fhis} leg. Soon it felt much better.",
              "At home, {fname}'s dad gave {fhim} a warm drink, and {fhis} leg felt much better.")
    elif trouble == "ball":
        t.add("`My {color} ball rolled into the pond, and I cannot swim,` said {fname}.")
        t.para()
        if swimmer:
            t.add("`I can swim!` said {name}.")
            t.add("{Name} jumped into the water and swam out to the ball.")
            t.add("{He} pushed it back to the shore with {his} nose.")
        else:
            t.add("{Name} tried to reach the ball, but it was too far away.")
            t.add("Then {he} had an idea.", "{Name} looked around. Then {he} had an idea.")
            t.add("{He} found a long branch and used it to pull the {color} ball back to the shore.")
        t.add("{fName} picked up {fhis} ball and laughed.")
    else:
        t.add("`I am lost, and I cannot find my way home,` said {fname}.")
        t.para()
        t.add("{Name} knew the way. `Do not worry,` {he} said. `Follow me.`")
        t.add("They walked past the big rock and over the little bridge.",
              "They walked along the river and past the old tree.")
        t.add("Soon they could see {fname}'s home. {fHis} mom was waiting at the door.")
    t.para()
    t.add("`Thank you, {name}!` said {fname}. `You are a true friend.`",
          "`Thank you so much!` said {fname}. `I am so glad you came.`",
          "`You helped me,` said {fname}. `Thank you, {name}!`")
    t.add("{Name} felt warm and happy inside.", "From that day on, {name} and {fname} were the best of friends.",
          "{Name} learned that helping a friend feels good.",
          "The moral of the story is: a friend in need is a friend indeed.")


def plot_sharing(t: Teller) -> None:
    """The hero gets something nice and learns that sharing it makes everyone happy."""
    c = t.ctx
    full, items, food, together = t.choice(SHARE_ITEMS)
    c.update(full=full, items=items, together=together)
    t.friend()
    t.elder()
    selfish = t.chance(0.6)
    intro(t, adjs=tuple(a for a in HERO_ADJS if a not in ("kind", "gentle")) if selfish else HERO_ADJS)
    t.para()
    t.add("{oneday}, {name}'s {erel} gave {him} a {full}.", "{oneday}, {ename} gave {name} a {full}.")
    if selfish:
        t.add("{Name} did not want to share them with anyone.", "`These {items} are all mine,` said {name}.")
        t.para()
        t.add("Soon, {fwho} came by.", "Then {name}'s friend {fname} came over to play.")
        if food:
            t.add("`Those {items} look so good,` said {fname}. `May I have one?`",
                  "{fName} was very hungry. `Can I have one, please?` {fhe} asked.")
        else:
            t.add("`Those {items} look like fun,` said {fname}. `May I play too?`",
                  "`Can I use some of your {items}, please?` asked {fname}.")
        t.add("`No,` said {name}. `They are all mine.`", "{Name} shook {his} head. `No. They are mine.`")
        t.add("{fName} walked away with {fhis} head down.", "{fName} went home feeling sad.")
        t.para()
        t.add("{Name} sat alone with {his} {items}.", "Now {name} had all the {items} to {self}.")
        t.add("But it was not fun at all. {He} felt lonely.", "But {he} did not feel happy. Something was wrong.")
        t.add("{Name} ran after {fname}. `I am sorry,` {he} said. `Please come back. We can share.`",
              "So {name} went to find {fname}. `I am sorry I did not share,` {he} said. `Let us share now.`")
        t.para()
        t.add("{fName} smiled, and they {together}.", "They sat under a big tree and {together}.")
        t.add("{Name} learned that sharing makes everyone happy.",
              "It was much more fun to share. From that day on, {name} always shared with {his} friends.",
              "The moral of the story is: sharing makes everyone happy.")
    else:
        t.add("{Name} was very happy. {He} wanted to share {his} {items} with {his} friend {fname}.",
              "`I will share them with my friend {fname},` said {name}.")
        t.para()
        t.add("{Name} went to {fname}'s home and knocked on the door.", "{Name} ran to find {fname}.")
        t.add("`Look what I have!` said {name}. `Let us share them.`")
        t.add("{fName} smiled, and they {together}.", "They sat in the sun and {together}.")
        t.para()
        c["gift"] = t.choice(("a jar of sweet honey", "a big yellow pear", "a bunch of purple grapes",
                              "a warm loaf of bread"))
        t.add("The next day, {fname} came to see {name}, and {fname} brought {gift}.",
              "The next day, {fname} knocked on {name}'s door with {gift}.")
        t.add("`You shared with me,` said {fname}. `Now I will share with you.`")
        t.add("{Name} learned that when you share, you get more friends.",
              "The moral of the story is: sharing makes everyone happy.",
              "{Name} and {fname} always shared after that, and they were never lonely.")


def plot_brave(t: Teller) -> None:
    """The hero is afraid of the dark or of a storm and, with help, becomes brave."""
    c = t.ctx
    t.elder()
    intro(t, adjs=tuple(a for a in HERO_ADJS if a not in ("happy", "cheerful")), mornings=(), extras=0.5)
    if t.chance(0.55):
        c["monster"], c["real"] = t.choice((("a big monster with long arms", "coat hanging on the chair"),
                                            ("a tall giant", "coat stand by the door"),
                                            ("a scary dragon", "toy box in the corner"),
                                            ("a monster with a long tail", "scarf hanging on the door")))
        c["light"] = t.choice(("moon", "star", "fish", "boat", "bunny"))
        t.add("{Name} was brave in the daytime. But at night, {he} was afraid of the dark.",
              "{Name} was not afraid of anything during the day. But {he} was very afraid of the dark.")
        t.para()
        t.add("One night, {ename} tucked {name} into bed and turned off the light.",
              "One night, {ename} kissed {name} good night and turned off the light.")
        t.add("The room was very dark. {Name} saw a big shadow on the wall. It looked like {monster}!")
        t.add("`{ecall}!` called {name}. `There is something in my room!`",
              "{Name} hid under {his} blanket. `{ecall}, help!` {he} called.")
        t.para()
        t.add("{eName} came and turned on the lamp. `Look,` {ehe} said. `It is only your {real}.`")
        t.add("{Name} looked. It was true!", "{Name} looked again. There was no monster at all.")
        t.maybe(0.4, "`The dark is just your room with the light off,` said {ename}.")
        t.add("Then {ename} gave {name} a little night light shaped like a {light}.")
        t.para()
        t.add("The next night, {name} looked at {his} {light} night light and smiled.",
              "The next night, {name} was not scared. {His} {light} night light glowed softly.")
        t.add("Then {he} closed {his} eyes and fell fast asleep.",
              "From that night on, {name} was not afraid of the dark anymore.",
              "{Name} learned that the dark is not so scary after all.")
    else:
        t.add("{Name} was afraid of storms. When the thunder boomed, {he} hid under {his} bed.",
              "{Name} was brave about most things, but {he} was very afraid of thunder.")
        t.para()
        t.add("One night, a big storm came. The wind blew, the rain hit the window, and the thunder went boom!",
              "One night, there was a loud storm. Lightning flashed, and the thunder went boom!")
        t.add("`{ecall}!` cried {name}. `I am scared!`", "{Name} pulled the blanket over {his} head and shook.")
        t.para()
        t.add("{eName} came and sat on the bed.")
        t.add("`Thunder is just a big noise,` {ehe} said. `It cannot hurt you.`",
              "`Thunder is just a big noise,` {ehe} said. `We are safe and warm inside our {home}.`",
              "`Do not be afraid,` {ehe} said. `Let us count after each flash. The bigger the number, "
              "the farther away the storm.`")
        t.maybe(0.5, "Then {ehe} sang {name} a soft song.", "Then {ehe} held {name}'s hand and told {him} a story.")
        t.para()
        t.add("Soon the storm moved far away. The rain became soft and quiet.",
              "Each time the thunder came, it was farther away. Then it stopped.")
        t.add("{Name} learned that {he} could be brave, even in a storm.",
              "{Name} snuggled under {his} warm blanket and fell asleep with a smile.",
              "From that night on, {name} was not afraid of storms anymore.")


SKILLS = (
    # (learn what, how it goes wrong, tip, success, every-day habit, kinds that may not learn it)
    ("ride a bike", "{he} wobbled and fell off", "Look ahead and keep pushing the pedals.",
     "{He} rode all the way down the road without falling", "rode {his} bike every day", ()),
    ("swim", "{he} splashed and sank and swallowed some water", "Kick your legs and move your arms slowly.",
     "{He} swam all the way across the pond", "swam in the pond every day", ("duck", "frog", "turtle", "bird", "owl")),
    ("fly", "{he} flapped {his} wings and fell into the soft grass",
     "Spread your wings wide and let the wind help you.",
     "{He} flew high above the trees", "flew over the meadow every day", None),
    ("jump rope", "the rope got caught on {his} feet", "Jump just when the rope touches the ground.",
     "{He} jumped ten times without stopping", "jumped rope every day", ()),
    ("whistle", "only air came out", "Make your lips small and round and blow softly.",
     "A loud, clear whistle came out", "whistled happy songs every day", ("bird", "owl", "duck")),
    ("climb the big tree", "{he} slipped and slid back down", "Hold on tight and take one step at a time.",
     "{He} climbed all the way to the top", "climbed the big tree every day", ("turtle",)),
    ("skate on the ice", "{his} feet slid out, and {he} fell down", "Bend your knees and go slowly.",
     "{He} skated all the way around the pond", "skated on the pond every winter", ()),
)


def plot_skill(t: Teller) -> None:
    """The hero fails at a new skill, is encouraged, keeps trying and succeeds."""
    c = t.ctx
    birds = ("bird", "owl", "duck")
    options = [s for s in SKILLS if (t.hero.kind in birds if s[5] is None else t.hero.kind not in s[5])]
    skill, fail, tip, success, habit, _ = t.choice(options)
    c.update(skill=skill, fail=fail, tip=tip, success=success, habit=habit)
    if t.chance(0.5):
        t.elder("m")
    else:
        t.friend("m")
    winter = skill.startswith("skate")
    intro(t, mornings=() if winter else MORNINGS)
    if winter:
        c["oneday"] = t.choice(("One cold winter day", "One snowy day", "When winter came"))
    t.add("{Name} wanted to learn to {skill} more than anything.",
          "All of {his} friends could {skill}, but {name} could not.",
          "{Name} had a dream. {He} wanted to {skill}.")
    t.para()
    t.add("{oneday}, {name} tried to {skill}. But {fail}.", "{oneday}, {name} decided to try. But {fail}.")
    t.add("{He} tried again, and again {fail}.", "{He} tried one more time. But again, {fail}.")
    t.add("`I will never learn,` said {name} sadly.", "`It is too hard!` cried {name}.",
          "{Name} sat down and felt like giving up.")
    t.para()
    t.add("{mfirst} sat down next to {name}. `Everyone finds it hard at first,` {mhe} said. `{tip}`",
          "{mfirst} saw {name} and came over. `Do not give up,` {mhe} said. `Here is a trick. {tip}`")
    t.maybe(0.5, "`I will help you,` said {mname}.", "`You can do it,` said {mname} with a smile.")
    t.para()
    t.add("So {name} tried again. And again. And again.", "{Name} took a deep breath and tried once more.")
    t.add("This time, it worked! {success}!", "And then it happened. {success}!")
    t.add("`I did it!` shouted {name}. `I can {skill}!`", "`Look at me!` called {name}. `I did it!`")
    t.maybe(0.5, "{mName} clapped and cheered.", "{mName} gave {name} a big hug.")
    t.add("From that day on, {name} {habit}.",
          "{Name} learned that if you keep trying, you can do hard things.",
          "The moral of the story is: never give up.")


TRIPS = (
    # (destination, sights, activities, keepsake (full, short), how the keepsake was got)
    ("the sea", ("big blue waves", "white boats far away", "a little red crab", "sea birds flying over the water"),
     ("built a big sand castle", "looked for shells on the beach", "splashed in the waves",
      "ate cold ice cream on the warm sand"),
     ("a pretty pink shell", "pink shell"), "{Name} found {keep} on the sand."),
    ("the forest", ("tall green trees", "red mushrooms", "a family of deer", "a little stream"),
     ("picked sweet berries", "listened to the birds sing", "had a picnic by the stream", "looked for animal tracks"),
     ("a big brown pine cone", "pine cone"), "{Name} found {keep} under a tree."),
    ("the market", ("piles of red apples", "big round cheeses", "baskets of fresh bread", "buckets of bright flowers"),
     ("bought fresh carrots and bread", "tasted sweet honey", "listened to a band play happy music",
      "bought a bunch of yellow flowers"),
     ("a little jar of honey", "jar of honey"), "{eName} bought {name} {keep}."),
    ("the farm", ("a big red barn", "brown cows in the field", "baby chicks", "a noisy old tractor"),
     ("fed the goats", "collected eggs from the hens", "rode on a hay wagon", "jumped in the soft hay"),
     ("a tiny wooden cow", "wooden cow"), "The farmer gave {name} {keep}."),
    ("the lake", ("a family of ducks", "fish jumping out of the water", "a little wooden boat", "tall green reeds"),
     ("went out in a little boat", "threw stones into the water", "had a picnic by the shore", "went fishing"),
     ("a smooth flat stone", "flat stone"), "{Name} found {keep} by the water."),
    ("the mountains", ("tall gray rocks", "snow on the tops of the mountains", "a waterfall", "a big eagle"),
     ("walked up a steep path", "drank cold water from a stream", "had a picnic on a big rock",
      "looked down at the tiny houses far below"),
     ("a shiny white stone", "white stone"), "{Name} found {keep} on the path."),
)


def plot_trip(t: Teller) -> None:
    """A day trip with a parent or grandparent: sights, things to do, and a keepsake brought home."""
    c = t.ctx
    t.elder()
    dest, sights, acts, (keep, keep_short), keep_line = t.choice(TRIPS)
    sights, acts = without_kind(sights, t.hero.kind), without_kind(acts, t.hero.kind)
    c.update(dest=dest, Dest=cap(dest), keep=keep, keep_short=keep_short)
    c["sight1"], c["sight2"] = pick_distinct(t.rng, sights, 2)
    c["act1"], c["act2"], c["act3"] = pick_distinct(t.rng, acts, 3)
    c["travel"] = t.choice(("walked to", "took a bus to", "took a train to", "rode in a little cart to",
                            "drove to"))
    intro(t)
    t.para()
    starts = ["{oneday}, {ename} said, `Today we are going to {dest}!`",
              "{oneday}, {name} and {his} {erel} went on a trip to {dest}."]
    if not c["opened_in_morning"]:
        starts.append("`Wake up, {name}!` said {ename} one morning. `We are going to {dest} today.`")
    t.add(*starts)
    t.add("{Name} was so excited.", "{Name} jumped up and down with joy.", "{Name} clapped {his} hands.")
    t.maybe(0.4, "{He} had never been to {dest} before.")
    t.para()
    t.add("They {travel} {dest}.")
    t.add("At {dest}, {name} saw {sight1} and {sight2}.", "{Name} saw {sight1}. {He} also saw {sight2}.")
    t.add("They {act1}. Then they {act2}.", "First, they {act1}. After that, they {act2}.")
    t.maybe(0.5, "Later, they {act3}.", "{Name} laughed and laughed.")
    t.add(keep_line)
    t.maybe(0.5, "{He} put it in {his} pocket to take home.", "{He} held it carefully all day.")
    t.para()
    t.add("When the sun began to set, they went home.", "In the evening, it was time to go home.")
    t.add("{Name} was tired, but {he} was very happy.", "{Name} was sleepy and happy.")
    t.add("That night, {name} put the {keep_short} next to {his} bed and dreamed about {dest}.",
          "{Name} kept the {keep_short} to remember the happy day at {dest}.",
          "`Can we go again soon?` asked {name}. `Yes,` said {ename} with a smile.")


GIFTS = (
    # (gift, short name, how it was made)
    ("a card with a big red heart on it", "card", "{He} folded the paper and drew the heart with {his} red crayon."),
    ("a crown of yellow flowers", "crown", "{He} picked the flowers in the meadow and wove them together."),
    ("a picture of the two of them playing", "picture", "{He} used all of {his} crayons to make it bright."),
    ("a necklace of shiny beads", "necklace", "{He} put the beads on a string, one by one."),
    ("a little clay bowl", "bowl", "{He} shaped the clay with {his} hands and painted it blue."),
    ("a paper kite with a long tail", "kite", "{He} cut the paper, tied the string and made a long tail."),
)


def plot_birthday(t: Teller) -> None:
    """A birthday: a handmade present and a surprise party for a friend, or for the hero."""
    c = t.ctx
    t.friend()
    gift, short, making = t.choice(GIFTS)
    c.update(gift=gift, gift_short=short, making=making, cake=t.choice(CAKES), number=t.choice(NUMBERS),
             hide=t.choice(HIDE_SPOTS))
    intro(t)
    if t.chance(0.55):
        t.maybe(0.6, "{His} best friend was {fwho}.")
        t.para()
        t.add("Tomorrow was {ffirst}'s birthday.", "It was almost {ffirst}'s birthday.")
        t.add("{Name} wanted to give {fhim} something special.", "{Name} wanted to make {fname} very happy.")
        t.maybe(0.4, "But {he} did not have any money for a present.")
        t.add("Then {he} had an idea. {He} would make {gift}!",
              "{Name} thought hard. At last, {he} decided to make {gift}.")
        t.para()
        t.add(making)
        t.add("It took a long time, but at last it was done.", "When it was finished, {name} smiled. It was perfect.")
        t.para()
        t.add("The next day, {name} and the other {folk} hid behind {hide}.",
              "On the big day, all of {fname}'s friends hid behind {hide}.")
        t.add("When {fname} came, they all jumped out and shouted, `Surprise! Happy birthday!`")
        t.add("{fName} laughed and clapped {fhis} hands.", "{fName} was so surprised that {fhe} jumped.")
        t.para()
        t.add("{Name} gave {fname} the {gift_short}.")
        t.add("`Did you make this for me?` asked {fname}. `I love it!`",
              "`This is the best present ever,` said {fname}. `Thank you, {name}!`")
        t.add("They ate {cake} and played games until the sun went down.",
              "{fName} kept the {gift_short} for a long, long time.",
              "It was the best birthday {fname} ever had.")
    else:
        t.elder()
        t.para()
        t.add("Today was {name}'s birthday.", "It was {name}'s birthday, and {he} was {number} years old.")
        t.add("{He} woke up early and waited. But nobody said happy birthday.",
              "But nobody said happy birthday to {him}. Not even {his} {erel}.")
        t.add("{His} {erel} was busy, and {his} friends were nowhere to be seen.",
              "{Name} looked for {his} friends, but {he} could not find anyone.")
        t.add("{Name} felt a little sad. Had everyone forgotten?")
        t.para()
        t.add("In the afternoon, {ename} asked {name} to come out to the garden.",
              "Later, {ename} said, `Come outside with me, {name}. I want to show you something.`")
        t.add("When they stepped outside, everyone jumped out from behind {hide} and shouted, `Surprise!`")
        t.add("All of {his} friends were there, and there was a {cake} with {number} candles.")
        t.para()
        t.add("{Name} made a wish and blew out the candles.", "Everyone sang, and {name} blew out the candles.")
        t.add("Then {ffirst} gave {him} {gift}. `I made it for you,` {fhe} said.")
        t.add("It was the best birthday {name} ever had.", "Nobody had forgotten after all.",
              "That night, {name} went to sleep with a big smile, holding the {gift_short}.")


PLANTS = (
    # (seeds, what grew, what they did with it)
    ("sunflower seeds", "there were three yellow sunflowers, even taller than {name}",
     "Every day, the sunflowers turned their faces to the sun."),
    ("carrot seeds", "there was a whole row of big orange carrots", "That night, they made carrot soup for dinner."),
    ("tomato seeds", "there were lots of round red tomatoes", "They made a big salad and shared it with everyone."),
    ("bean seeds", "there were long green beans climbing up the fence",
     "They picked a big basket of beans for dinner."),
    ("pumpkin seeds", "there was one big, round, orange pumpkin", "They made a pumpkin pie together."),
    ("strawberry seeds", "there were lots of sweet red strawberries", "They ate the strawberries with cream."),
)


def plot_garden(t: Teller) -> None:
    """The hero plants seeds, has to wait patiently, and is rewarded."""
    c = t.ctx
    t.elder()
    seeds, grown, end = t.choice(PLANTS)
    c.update(seeds=seeds, grown=grown, end=end, color=t.choice(COLORS))
    intro(t, extras=0.5)
    t.maybe(0.4, "{Name} loved to help in the garden.", "{Name} and {his} {erel} had a little garden.")
    t.para()
    if c["opened_in_morning"]:
        t.add("{oneday}, {ename} gave {name} a little bag of {seeds}.")
    else:
        t.add("One spring morning, {ename} gave {name} a little bag of {seeds}.",
              "One day in spring, {ename} gave {name} a bag of {seeds}.")
    t.add("{Name} dug small holes in the soft dirt and put a seed in each one.",
          "{Name} planted the seeds in a long row and covered them with dirt.")
    t.add("Then {he} watered them with {his} little {color} watering can.")
    t.para()
    t.add("The next morning, {name} ran outside to look. But there was nothing there.",
          "The next day, {name} looked at the garden. Nothing had grown.")
    t.add("`When will they grow?` asked {name}.", "`Why is it taking so long?` asked {name}.")
    t.add("`Be patient,` said {ename}. `Good things take time.`",
          "`Seeds grow slowly,` said {ename}. `You must wait.`")
    t.add("So {name} waited. Every morning, {he} watered the seeds with {his} {color} watering can.",
          "So every day, {name} filled {his} {color} watering can and gave the seeds a drink.")
    t.para()
    t.add("One morning, {name} saw tiny green shoots in the dirt!",
          "Then, one day, little green leaves poked out of the ground!")
    t.maybe(0.5, "The little plants grew bigger and bigger.", "Day by day, the plants grew taller.")
    t.add("By the end of summer, {grown}.")
    t.maybe(0.6, end)
    t.add("{Name} learned that waiting is hard, but it is worth it.",
          "From then on, {name} helped in the garden every spring.",
          "{Name} was very proud of {his} garden.")


def plot_truth(t: Teller) -> None:
    """The hero does something wrong, blames someone else, feels bad, and tells the truth."""
    c = t.ctx
    t.elder(roles=("mom", "dad", "grandma"))
    intro(t, adjs=tuple(a for a in HERO_ADJS if a not in ("kind", "gentle")), extras=0.4)
    if t.chance(0.55):
        c["obj"] = t.choice(("vase", "bowl", "teapot", "teacup", "flower pot"))
        c["ocolor"] = t.choice(COLORS)
        t.add("{His} {erel} had a {ocolor} {obj} that {ehe} loved very much.",
              "On the table, there was a pretty {ocolor} {obj}. It was {ename}'s favorite.")
        t.para()
        t.add("{oneday}, {name} was playing ball inside the {home}.", "{oneday}, {name} threw a ball in the {home}.")
        t.maybe(0.4, "{He} knew that it was not allowed.", "{eName} had told {him} not to do that.")
        t.add("The ball hit the {obj}. Crash! The {obj} fell to the floor and broke.",
              "The ball bounced high and knocked over the {obj}. It broke into pieces!")
        blames = ("the wind knocked it over", "a bird flew in and knocked it down", "it fell down by itself")
        blames = without_kind(blames + (("the cat did it",) if c["land"] in ("town", "village") else ()), t.hero.kind)
        wrong = "I broke the {obj}."
        fix = "Together, they glued the {ocolor} {obj} back together."
    else:
        c["obj"] = "cookies"
        t.add("{oneday}, {ename} baked a plate of cookies for a party.",
              "{oneday}, {ename} made a big plate of cookies for the picnic.")
        t.add("`Do not eat them yet,` {ehe} said. `They are for later.`")
        t.para()
        t.add("But the cookies smelled so good. {Name} ate one, then another, until the plate was empty.",
              "When nobody was looking, {name} ate one cookie. Then {he} ate all the rest.")
        blames = ("a little mouse ate them", "a big crow took them")
        blames = without_kind(blames + (("the dog ate them",) if c["land"] in ("town", "village") else ()), t.hero.kind)
        wrong = "I ate the cookies."
        fix = "Then they baked a new plate of cookies together."
    c["blame"] = t.choice(blames)
    t.para()
    t.add("`What happened?` asked {ename}.", "{eName} saw the mess. `Who did this?` {ehe} asked.")
    t.add("{Name} was scared. `It was not me,` {he} said. `I think {blame}.`",
          "`Not me,` said {name} quickly. `I think {blame}.`")
    t.para()
    t.add("That night, {name} could not sleep. {He} felt bad inside.",
          "All evening, {name} had a heavy feeling in {his} tummy.")
    t.add("The next morning, {name} went to {ename}. `I am sorry,` {he} said. `" + wrong + "`",
          "At last, {name} went to {ename}. `I did not tell the truth,` {he} said. `" + wrong + "`")
    t.add("{eName} gave {name} a hug. `Thank you for telling me the truth,` {ehe} said.",
          "`Thank you for telling me,` said {ename}. `I am proud of you.`")
    t.maybe(0.6, fix)
    t.add("{Name} learned that telling the truth is always the best thing to do.",
          "The moral of the story is: always tell the truth, even when it is hard.",
          "From that day on, {name} always told the truth.")


def plot_race(t: Teller) -> None:
    """A fable-style race: the proud fast runner stops to rest, and the slow, steady one wins."""
    c = t.ctx
    fast_kinds = ("rabbit", "fox", "dog", "squirrel", "cat", "deer")
    slow_kinds = ("turtle", "snail")
    if t.human:
        opp_kinds = HUMAN_KINDS
        hero_fast = t.chance(0.4)
    elif t.hero.kind in slow_kinds:
        hero_fast, opp_kinds = False, fast_kinds
    elif t.hero.kind in fast_kinds and t.chance(0.5):
        hero_fast, opp_kinds = True, slow_kinds
    else:
        hero_fast, opp_kinds = False, [k for k in fast_kinds if k != t.hero.kind]
    t.friend("f", opp_kinds)
    c["start"] = t.choice(("the big oak tree", "the old bridge", "the red barn", "the little gate"))
    c["finish"] = t.choice(("the river", "the top of the hill", "the old well", "the big rock"))
    c["rest"], c["resting"] = t.choice((("lay down under a tree and fell asleep", "woke up"),
                                        ("stopped to eat some sweet berries", "finished eating"),
                                        ("stopped to play in the flowers", "looked up")))
    # f is always the other runner; swap roles so that "fast" and "slow" read the same in both cases
    if hero_fast:
        intro(t, adjs=("fast", "quick", "proud", "speedy"), mornings=(), extras=0)
        t.add("{Name} was the fastest {kind} of all, and {he} liked to tell everyone.",
              "{Name} could run faster than anyone, and {he} was very proud of it.")
        t.add("{He} often laughed at {fwho}, who was very slow.")
        t.para()
        t.add("`Let us have a race,` said {fname} one day.")
        t.add("{Name} laughed. `You? You are so slow! I will win easily.`")
        t.add("The race would go from {start} to {finish}.")
        t.maybe(0.3, "All the {folk} came to watch.")
        t.para()
        t.maybe(0.3, "`Ready, set, go!` shouted the {folk}.")
        t.add("{Name} ran off very fast and was soon far ahead.")
        t.add("`{fName} is so slow. I have lots of time,` {he} said. So {he} {rest}.",
              "`I have lots of time,` said {name}, and {he} {rest}.")
        t.add("Meanwhile, {fname} kept going, step by step.", "But {fname} did not stop, not even once.")
        t.add("When {name} {resting}, {fname} was almost at {finish}! {Name} ran as fast as {he} could, "
              "but it was too late. {fName} won the race!")
        t.para()
        t.add("{Name} felt silly. From that day on, {he} never laughed at anyone again.",
              "{Name} said sorry to {fname}, and they became good friends.")
        t.add("The moral of the story is: slow and steady wins the race.",
              "The moral of the story is: do not boast, and do not laugh at others.")
    else:
        intro(t, adjs=("little", "small", "patient", "quiet", "gentle"), mornings=(), extras=0)
        t.add("{Name} was very slow, but {he} never gave up.",
              "{Name} could not run fast, but {he} always kept going.")
        t.add("{fwho}, who was very fast, liked to laugh at {him}.",
              "{His} neighbor, {fwho}, was very fast and very proud.")
        t.para()
        t.add("`You are so slow,` said {fname}. `I could beat you in a race any day.`")
        t.add("`Then let us have a race,` said {name} quietly.")
        t.add("The race would go from {start} to {finish}.")
        t.maybe(0.3, "All the {folk} came to watch.")
        t.para()
        t.maybe(0.3, "`Ready, set, go!` shouted the {folk}.")
        t.add("{fName} ran off very fast and was soon far ahead.")
        t.add("`{Name} is so slow. I have lots of time,` {fhe} said. So {fhe} {rest}.",
              "`I have lots of time,` said {fname}, and {fhe} {rest}.")
        t.add("{Name} kept going, step by step.", "But {name} did not stop, not even once.")
        t.add("When {fname} {resting}, {name} was almost at {finish}! {fName} ran as fast as {fhe} could, "
              "but it was too late. {Name} won the race!")
        t.para()
        t.maybe(0.5, "All the {folk} cheered.", "Everyone clapped and cheered for {name}.")
        t.add("The moral of the story is: slow and steady wins the race.",
              "{fName} learned not to laugh at others.",
              "From that day on, {fname} never laughed at {name} again.")


def plot_weather(t: Teller) -> None:
    """A snow day, a rainy day or a windy day, and what the hero does with it."""
    c = t.ctx
    t.elder()
    t.friend()
    c["color"] = t.choice(COLORS)
    kind = t.choice(("snow", "rain", "wind"))
    if kind == "snow":
        intro(t, mornings=("One snowy morning", "One cold winter morning"), extras=0.5)
        if c["opened_in_morning"]:
            t.add("{He} looked out of the window. Everything was white with snow!")
        else:
            t.add("One winter morning, {name} woke up and looked out of the window. Everything was white with snow!")
        t.add("`Snow!` shouted {name}. `{ecall}, can I go out and play?`")
        t.add("`Yes,` said {ename}. `But put on your warm {color} hat first.`")
        t.para()
        t.add("{Name} put on {his} {color} hat and ran outside.", "So {name} put on the {color} hat and went out.")
        acts = pick_distinct(t.rng, ("{He} built a big snowman with a carrot for a nose.",
                                     "{He} lay down in the snow and made a snow angel.",
                                     "{He} slid down the hill on a little sled. Whoosh!",
                                     "{He} caught snowflakes on {his} tongue.",
                                     "{ffirst} came over, and they had a snowball fight."), 2)
        t.add(acts[0])
        t.add(acts[1])
        t.para()
        t.add("When {his} nose was red and cold, {name} went back inside.",
              "When it began to get dark, {name} went back inside.")
        t.add("{eName} made {him} a cup of hot cocoa.", "{eName} gave {him} warm soup by the fire.")
        t.add("It was the best snow day ever.", "That night, {name} dreamed of snow.",
              "{Name} hung {his} {color} hat by the fire to dry and smiled.")
    elif kind == "rain":
        intro(t, mornings=("One rainy morning", "One gray morning"), extras=0.5)
        if c["opened_in_morning"]:
            t.add("{He} looked out of the window. It was raining hard.")
        else:
            t.add("One day, it was raining hard. {Name} pressed {his} nose against the window.",
                  "One gray afternoon, it started to rain. {Name} pressed {his} nose against the window.")
        t.add("{He} could not go outside to play. `This is a boring day,` {he} said.")
        t.para()
        if t.chance(0.5):
            t.add("`Put on your {color} raincoat and your boots,` said {ename}. `Let us go for a walk in the rain!`")
            t.add("They went outside. {Name} jumped in every puddle. Splash! Splash!")
            t.maybe(0.6, "{He} saw a fat worm on the path and a snail on a leaf.",
                    "{He} made a paper boat and watched it float down the puddle.")
        else:
            t.add("`Let us build a fort,` said {ename}.")
            t.add("They put blankets over two chairs and crawled inside. They read books with a little flashlight.")
            t.maybe(0.6, "Then {ffirst} came over, and they had a picnic inside the fort.",
                    "They drew pictures and told funny stories.")
        t.para()
        t.add("Soon the rain stopped, and a big rainbow came out.", "Later, the sun came out again.")
        t.add("{Name} learned that a rainy day can be a happy day too.",
              "`That was a fun rainy day,` said {name} with a smile.",
              "It was not a boring day after all.")
    else:
        intro(t, mornings=("One windy morning",), extras=0.5)
        t.add("{oneday}, the wind was blowing hard. The trees swayed, and the leaves danced in the air.")
        t.add("`It is a perfect day to fly a kite!` said {name}.")
        t.para()
        t.add("{Name} took {his} {color} kite to the top of the hill. {ffirst} came too.",
              "{Name} and {ffirst} took the {color} kite to the top of the hill.")
        t.add("The wind caught the kite, and it flew higher and higher.")
        t.maybe(0.6, "Then a big gust of wind pulled the string hard. But {name} held on tight.")
        t.add("The {color} kite danced in the sky like a bird.", "{fName} laughed and clapped.")
        t.para()
        t.add("When the wind slowed down, the kite floated back to the ground.")
        t.add("{Name} and {fname} walked home with rosy cheeks.", "They went home tired and happy.")
        t.add("It was the best windy day ever.", "{Name} could not wait for the next windy day.")


DIFFERENCES = (
    # (how the newcomer is different, why others kept away, the newcomer's gift)
    ("very big, much bigger than everyone else", "The other {folk} were a little afraid of {fhim}.",
     "{fName} was so tall that {fhe} could reach the sweetest apples at the top of the tree."),
    ("very shy and quiet", "{fHe} did not talk much, so nobody asked {fhim} to play.",
     "{fName} was very good at listening, and {fhe} knew where to find the prettiest stones."),
    ("from a land far away", "{fHe} talked in a different way, and the other {folk} did not understand {fhim}.",
     "{fName} taught them a fun new game from {fhis} old home."),
    ("a little different from everyone else, with bright purple spots", "The other {folk} just stared at {fhim}.",
     "{fName} could sing the most beautiful songs."),
    ("very small, much smaller than everyone else", "The other {folk} said {fhe} was too small to play.",
     "{fName} was the best at hide and seek, because {fhe} could hide anywhere."),
)


def plot_new_friend(t: Teller) -> None:
    """Someone new and different arrives; the hero is the first to be kind, and they become friends."""
    c = t.ctx
    t.friend()
    diffs = DIFFERENCES if not t.ctx["human"] else [d for d in DIFFERENCES if "spots" not in d[0]]
    diff, avoid, gift = t.choice(diffs)
    c.update(diff=diff, avoid=avoid, gift=gift, game=t.choice(GAMES))
    intro(t)
    t.para()
    t.add("{oneday}, a new {fkind} came to live {at_land}. {fHis} name was {fname}.",
          "{oneday}, {fintro} moved to the {land}.")
    t.add("{fName} was {diff}.")
    t.add(avoid)
    t.para()
    t.add("{Name} saw {fname} sitting all alone under a tree.",
          "Later, {name} saw {fname} standing alone by the fence.")
    t.add("`Hello,` said {name}. `My name is {name}. Do you want to play with me?`",
          "{Name} walked over and said, `Hi! Would you like to play {game} with me?`")
    t.add("{fName} smiled a shy smile. `Yes, please,` {fhe} said.", "{fName} smiled. `I would love to!` {fhe} said.")
    t.para()
    t.add("They played {game} all afternoon.", "{Name} and {fname} played {game} until the sun went down.")
    t.add(gift)
    t.maybe(0.7, "Soon the other {folk} wanted to play too.", "The other {folk} came to see, and they joined in.")
    t.para()
    t.add("From that day on, {name} and {fname} were best friends.",
          "{Name} and {fname} became best friends, and they played together every day.")
    t.maybe(0.7, "{Name} learned that being different is not a bad thing.",
            "The moral of the story is: be kind to someone new.",
            "The moral of the story is: everyone needs a friend.")


def plot_lost_pet(t: Teller) -> None:
    """A pet (or, for animal heroes, a little brother or sister) wanders off and is found."""
    c = t.ctx
    t.helper()
    set_place(t)
    if t.human:
        pkind = t.choice(("puppy", "kitten", "bunny"))
        t.cast("p", Character(t.choice(PET_NAMES), pkind, t.chance(0.5)))
        c["pdesc"] = pkind
        c["plove"] = {"puppy": "chase {phis} tail and dig in the garden", "kitten": "play with a ball of yarn",
                      "bunny": "eat carrots and hop around the yard"}[pkind]
        c["pfound"] = t.choice({"puppy": ("digging a big hole under a bush", "chasing a butterfly"),
                                "kitten": ("sitting high up in a tree", "chasing a butterfly"),
                                "bunny": ("eating the lettuce in a garden", "sleeping under a bush")}[pkind])
        c["plook"] = t.choice(("small and brown", "small and white", "black with white paws", "fluffy and gray"))
        c["gone"] = "{oneday}, {name} saw that the gate was open. {pName} was gone!"
    else:
        female = t.chance(0.5)
        t.cast("p", Character(t.new_name(female), t.hero.kind, female))
        c["pdesc"] = "little sister" if female else "little brother"
        c["plove"] = "follow {name} everywhere"
        c["pfound"] = t.choice(("picking flowers by a rock", "watching the fish in a stream", "sleeping under a bush",
                                "chasing a butterfly"))
        c["plook"] = t.choice(("very small", "small and very curious"))
        c["gone"] = "{oneday}, {name} turned around, and {pname} was gone!"
    intro(t, extras=0.4)
    t.add("{Name} had a {pdesc} named {pname}. {pName} loved to {plove}.",
          "{Name} had a {pdesc} named {pname}. {pName} was {plook}.")
    t.para()
    t.add("{oneday}, {name} went to find {pname}. But {pname} was not there!", "{gone}")
    t.add("`{pName}! Where are you?` called {name}.", "{Name} called and called, but {pname} did not come.")
    t.para()
    t.maybe(0.5, "{Name} looked everywhere, but {pname} was nowhere.")
    t.add("Then {he} saw {hname}. `Have you seen my {pdesc}?` asked {name}. `{pHe} is {plook}.`",
          "{Name} asked {hname}, `Have you seen my {pdesc}?`")
    t.add("`Yes,` said {hshort}. `I saw {phim} go toward {place}.`",
          "`I think so,` said {hshort}. `Look {at_place}.`")
    t.para()
    t.add("{Name} {went} to {place} as fast as {he} could.", "{Name} thanked {hshort} and hurried to {place}.")
    t.add("There was {pname}, {pfound}!", "And there, {at_place}, was {pname}, {pfound}!")
    t.add("{Name} gave {pname} a big hug. `I was so worried about you,` {he} said.",
          "`There you are!` cried {name}, and {he} hugged {pname} tight.")
    if t.human:
        t.add("From that day on, {name} always closed the gate.",
              "That night, {pname} slept at the end of {name}'s bed.",
              "{Name} and {pname} walked home together, happy and safe.")
    else:
        t.add("{pName} promised not to go off alone again, and they went home together.",
              "That night, {name} told {pname} a story until {pname} fell asleep.")


TREATS = (
    # (treat, pronoun, "is"/"are", "was"/"were", special step)
    ("cookies", "They", "are", "were", "{Name} rolled the dough into little balls."),
    ("banana bread", "It", "is", "was", "{Name} mashed three yellow bananas with a fork."),
    ("apple pie", "It", "is", "was", "{eName} cut the apples into thin slices."),
    ("chocolate cake", "It", "is", "was", "{Name} added lots of chocolate."),
    ("muffins", "They", "are", "were", "{Name} dropped blueberries into the batter, one by one."),
    ("jam tarts", "They", "are", "were", "{Name} put a spoon of red jam in each one."),
)


def plot_baking(t: Teller) -> None:
    """The hero bakes with a parent or grandparent and shares the result."""
    c = t.ctx
    t.elder(roles=("grandma", "grandpa", "grandma", "mom", "dad"))
    treat, it, is_, was, special = t.choice(TREATS)
    c.update(treat=treat, It=it, is_=is_, was=was)
    intro(t)
    t.para()
    t.add("{oneday}, {name} went to visit {his} {erel}.", "{oneday}, {name} was helping {his} {erel} in the kitchen.")
    t.add("`Let us bake {treat} together,` said {ename}.", "`Shall we make some {treat}?` asked {ename}.")
    t.add("`Yes, please!` said {name}.", "{Name} clapped {his} hands. `Yes!`")
    t.para()
    t.add("First, they put flour and sugar into a big bowl.", "First, {ename} put flour and sugar into a bowl.")
    t.maybe(0.6, "Then {name} cracked two eggs. One egg fell on the floor, and they both laughed.",
            "Then {name} added some milk and butter.")
    t.add(special)
    t.add("{Name} stirred and stirred.", "{Name} mixed everything with a big wooden spoon.")
    t.add("Then {ename} put the {treat} into the hot oven.")
    t.para()
    t.maybe(0.6, "While they waited, {ename} told {name} a story about when {ehe} was little.",
            "While they waited, they cleaned up the kitchen together.")
    t.add("Soon, the whole kitchen smelled warm and sweet.", "Soon, a sweet smell filled the kitchen.")
    t.add("When the {treat} {was} ready, {name} took a big bite.", "At last, the {treat} {was} ready.")
    t.add("`Mmm! This is the best {treat} in the world!` said {name}.", "`Yum!` said {name}. `{It} {is_} perfect!`")
    t.para()
    t.add("They saved some for {his} friends.", "They wrapped some up to share with the neighbors.")
    t.add("{Name} could not wait to bake with {ename} again.",
          "That night, {name} went to sleep dreaming about {treat}.",
          "{Name} learned that the best things are made together.")


def plot_kindness_fable(t: Teller) -> None:
    """A fable: the hero helps a stranger, and later the stranger returns the kindness."""
    c = t.ctx
    pairs = [p for p in (
        ("owl", "old", "{later}, {name} stayed out too late and got lost in the dark woods.",
         "The owl could see well in the dark. {hHe} flew ahead and showed {name} the way home."),
        ("turtle", "old", "{later}, {name} needed to get across the wide river, but {he} could not swim.",
         "The turtle let {name} ride on {hhis} big shell all the way across the river."),
        ("bear", "big", "{later}, a big storm came, and a heavy branch blocked the way into {name}'s {home}.",
         "The bear pushed the heavy branch away with {hhis} strong paws."),
        ("horse", "old", "{later}, {name} hurt {his} foot far away from home.",
         "The horse let {name} ride on {hhis} back all the way home."),
    ) if p[0] != t.hero.kind and not (p[0] == "turtle" and t.hero.kind in ("bear", "duck", "frog", "bird", "owl"))]
    hkind, hadj, trouble, rescue = t.choice(pairs)
    t.cast("h", Character(f"the {hkind}", hkind, t.chance(0.5)))
    c.update(hkind=hkind, hadj=hadj, snack=t.choice(SNACKS),
             later=t.choice(("A few days later", "Not long after that", "Some time later", "One cold evening")))
    intro(t, extras=0.2)
    t.para()
    t.add("{oneday}, {name} met a {hadj} {hkind} by the road. The {hkind} looked tired and hungry.",
          "{oneday}, {name} saw a {hadj} {hkind} sitting under a tree. The {hkind} looked very hungry.")
    t.maybe(0.5, "`I have not eaten all day,` said the {hkind} sadly.")
    t.add("{Name} had only one {snack} for {his} lunch. But {he} gave it to the {hkind}.",
          "{Name} was hungry too, but {he} gave {his} {snack} to the {hkind}.")
    t.add("`Thank you, little {kind},` said the {hkind}. `One day, I will help you too.`")
    t.para()
    t.add(trouble)
    t.add("{Name} did not know what to do.", "{Name} called for help, but nobody came.")
    t.para()
    t.add("Then {he} heard a friendly voice. It was the {hadj} {hkind}!", "Just then, the {hadj} {hkind} came by.")
    t.add(rescue)
    t.add("`You helped me when I was hungry,` said the {hkind}. `Now I can help you.`",
          "`You were kind to me,` said the {hkind}. `Now I am kind to you.`")
    t.maybe(0.5, "`Thank you,` said {name}. `You are a true friend.`")
    t.para()
    t.add("The moral of the story is: a kind act is never wasted.",
          "The moral of the story is: when you are kind to others, they will be kind to you.",
          "{Name} learned that even a small kindness can come back to you.")


FRUITS = (("apple tree", "apples", "red"), ("pear tree", "pears", "yellow"), ("plum tree", "plums", "purple"),
          ("cherry tree", "cherries", "red"))


def plot_greedy_fable(t: Teller) -> None:
    """A fable: the greedy hero wants all the fruit, loses it, and learns to take only what is needed."""
    c = t.ctx
    tree, fruit, color = t.choice(FRUITS)
    c.update(tree=tree, fruit=fruit, fcolor=color)
    t.friend()
    intro(t, adjs=("young", "little", "hungry", "greedy"), extras=0)
    t.para()
    t.add("{oneday}, {name} found an old {tree} full of {fcolor} {fruit}.",
          "{oneday}, {name} came to a big {tree}. It was full of sweet {fcolor} {fruit}.")
    t.add("There were enough {fruit} for everyone. But {name} wanted them all.",
          "{Name} did not want to share a single one.")
    t.add("{He} picked {fruit} all day and put them in a big sack.", "{He} filled a big sack with {fruit}.")
    t.para()
    t.add("{fwho} came by. `May I have one?` {fhe} asked.", "Soon {fwho} came by and asked for one.")
    t.add("`No!` said {name}. `They are all mine.`", "`Go away,` said {name}. `These {fruit} are mine.`")
    t.maybe(0.6, "So {fname} picked just two {fruit} from a low branch and went on {fhis} way.")
    t.para()
    t.add("The sack was so heavy that {name} could hardly carry it.", "The sack was very, very heavy.")
    t.add("On the way home, {name} crossed a narrow bridge. {He} slipped, and the sack fell into the river!",
          "At the river, {name} slipped on a wet stone, and the sack fell into the water!")
    t.add("All the {fruit} floated away.", "The river carried all the {fruit} away.")
    t.maybe(0.5, "{Name} sat down and cried.", "Now {name} had nothing at all.")
    t.para()
    t.add("{fName} saw {him} and came over. {fHe} gave {name} one of {fhis} {fruit}.",
          "Then {fname} came by and shared {fhis} {fruit} with {name}.")
    t.add("`Thank you,` said {name} quietly. `I am sorry I was greedy.`")
    t.add("The moral of the story is: do not be greedy. Take only what you need.",
          "The moral of the story is: if you want everything, you may end up with nothing.")


def plot_proud_fable(t: Teller) -> None:
    """A fable: a hero too proud of their looks to play falls in the mud and is helped by the others."""
    c = t.ctx
    look = t.choice(c["looks"])
    c["proud"] = look.removeprefix("a ")
    c["proud_be"] = "were" if c["proud"].endswith("s") else "was"
    intro(t, adjs=("proud", "fine", "vain", "young"), mornings=(), extras=0)
    t.add("{He} was very proud of {his} {proud}.", "{Name} thought {his} {proud} {proud_be} the finest {at_land}.")
    t.add("{He} would not play with the other {folk}. `I might get dirty,` {he} said.",
          "When the other {folk} asked {him} to play, {he} always said no. `You are too messy,` {he} said.")
    t.para()
    t.add("{oneday}, {name} went for a walk to show off {his} {proud}.",
          "{oneday}, {name} went to the river to look at {him}self in the water.")
    t.add("But {he} did not look where {he} was going. {He} fell into a deep, muddy ditch!",
          "Suddenly, {he} slipped on a wet stone and fell into a deep, muddy ditch!")
    t.add("{Name} tried to climb out, but the sides were too slippery. `Help!` {he} cried.",
          "`Help! Help!` cried {name}. {He} could not climb out.")
    t.para()
    t.add("The other {folk} heard {him} and came running.", "The other {folk} heard the noise and came to help.")
    t.add("They pulled and pulled, until {name} was out.", "Together, they pulled {name} out of the mud.")
    t.add("{Name} was covered in mud from head to toe. But {he} did not care anymore.",
          "{Name} was very muddy, but {he} did not mind.")
    t.add("`Thank you,` {he} said. `I am sorry I was so proud.`")
    t.para()
    t.maybe(0.6, "From that day on, {name} played with everyone, even in the mud.",
            "After that, {name} always played with the other {folk}.")
    t.add("The moral of the story is: a kind heart is better than a fine look.",
          "The moral of the story is: do not be proud. Friends are worth more than looks.")


def plot_lost_way(t: Teller) -> None:
    """The hero wanders off, gets lost, and a wise animal shows the way home."""
    c = t.ctx
    t.elder(roles=("mom", "dad"))
    t.helper()
    landmarks = [m for m in without_kind(LANDMARKS, t.hero.kind) if c["home"] not in m.split()]
    c.update(color=t.choice(COLORS), landmark=t.choice(landmarks))
    intro(t, extras=0.4)
    t.maybe(0.5, "{His} {erel} always said, `Do not go too far from home.`",
            "Every day, {his} {erel} told {him}, `Stay close to home.`")
    t.para()
    t.add("{oneday}, {name} saw a beautiful {color} butterfly.", "{oneday}, a {color} butterfly flew past {name}.")
    t.add("{He} followed it past the big rock and into the woods.",
          "{Name} chased it across the field and deep into the woods.")
    t.add("Then the butterfly flew away, and {name} did not know where {he} was!",
          "Soon the butterfly was gone. {Name} looked around. {He} was lost!")
    t.para()
    t.maybe(0.3, "It was getting dark and cold.")
    t.add("{Name} sat down on a log and began to cry.", "{Name} felt very scared.")
    t.add("Then {he} heard a voice. `Why are you crying, little {kind}?` It was {hname}.",
          "Just then, {hname} came by. `What is wrong, little one?` {hhe} asked.")
    t.add("`I am lost,` said {name}. `I want to go home.`")
    t.para()
    t.add("`Where do you live?` asked {hshort}. `Near the {landmark},` said {name}.",
          "`What is near your home?` asked {hshort}. `A {landmark},` said {name}.")
    t.add("`I know that {landmark},` said {hshort}. `Follow me.`")
    t.add("They walked until they saw the {landmark}. And there was {name}'s {home}!",
          "Soon they came to the {landmark}, and {name} could see {his} {home}!")
    t.para()
    t.add("{eName} ran out and gave {name} a big hug.", "{eName} was waiting outside. {eHe} hugged {name} tight.")
    t.maybe(0.4, "`Thank you for bringing {him} home,` {ehe} said to {hshort}.")
    t.add("{Name} promised to stay close to home.",
          "From that day on, {name} never went too far from home again.",
          "That night, {name} fell asleep safe and warm in {his} own bed.")


PLOTS = (
    plot_lost_object, plot_help_friend, plot_sharing, plot_brave, plot_skill, plot_trip, plot_birthday,
    plot_garden, plot_truth, plot_race, plot_weather, plot_new_friend, plot_lost_pet, plot_baking,
    plot_kindness_fable, plot_greedy_fable, plot_proud_fable, plot_lost_way,
)


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------

MIN_WORDS, MAX_WORDS = 60, 170


def generate_story(rng: random.Random) -> str:
    """One story (MIN_WORDS..MAX_WORDS words), drawn with rng; retries the same plot if it comes out too short/long."""
    plot = rng.choice(PLOTS)
    story = ""
    for _ in range(20):
        t = Teller(rng)
        plot(t)
        story = t.render()
        if MIN_WORDS <= len(story.split()) <= MAX_WORDS:
            break
    return story


def generate_stories(seed: int, count: int) -> list[str]:
    """count stories drawn from random.Random(seed) alone: the same seed always gives the same stories."""
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(count)]


def corpus_text(stories: list[str]) -> str:
    """The corpus file: stories separated by a blank line, ending with a newline."""
    return "\n\n".join(stories) + "\n"


def print_stats(stories: list[str], out=sys.stderr) -> None:
    """Print a short summary of the corpus (sizes, vocabulary, openings, most common words)."""
    lengths = [len(s.split()) for s in stories]
    words = Counter()
    for s in stories:
        words.update(re.findall(r"[a-z]+(?:'[a-z]+)?", s.lower()))
    n = max(len(stories), 1)
    once = sum(s.startswith("Once upon a time") for s in stories)
    print(f"corpus version:  {CORPUS_VERSION}", file=out)
    print(f"stories:         {len(stories)}", file=out)
    print(f"words:           {sum(lengths)}", file=out)
    print(f"distinct words:  {len(words)}", file=out)
    print(f"words per story: mean {sum(lengths) / n:.1f}, min {min(lengths, default=0)}, max {max(lengths, default=0)}",
          file=out)
    print(f"'Once upon a time' openings: {once} ({100 * once / n:.1f}%)", file=out)
    print("30 most common words: " + ", ".join(f"{w} {c}" for w, c in words.most_common(30)), file=out)


def main(argv: list[str] | None = None) -> int:
    """Command line: write the corpus to --out (or stdout) and optionally print --stats to stderr."""
    parser = argparse.ArgumentParser(description="Write the training corpus for the built-in demo model.")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default: 1234)")
    parser.add_argument("--count", type=int, default=20000, help="number of stories (default: 20000)")
    parser.add_argument("--out", default="-", help="output file; '-' or omitted for stdout")
    parser.add_argument("--stats", action="store_true", help="print corpus statistics to stderr")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be >= 0")
    stories = generate_stories(args.seed, args.count)
    text = corpus_text(stories)
    if args.out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    if args.stats:
        print_stats(stories)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
