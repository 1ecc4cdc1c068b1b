"""Make the course's own small dataset: short English reviews labelled by topic AND sentiment.

Every text is a one-to-three-sentence review (10-40 words) of one of six kinds of things
(films, books, restaurants, hotels, phones, trails), and is either positive or negative.
The same texts ship as two datasets that differ only in the label column:

    data/reviews_topic/{train,val,test}.csv       label = topic ("films", "books", ...)
    data/reviews_sentiment/{train,val,test}.csv   label = "negative" / "positive"

Both have the header ``text,label`` and the same rows in the same order.

How the texts are built (and why): a review is a few *aspect* clauses full of topic words
("the waiter was friendly", "the battery dies by lunch") plus one *verdict* sentence that
decides the sentiment ("I would not hesitate to eat there again" / "I would hesitate to eat
there again"). The aspects are praise or complaint at random, nearly independently of the
label, so positive and negative words occur in both classes; the verdicts come in near-minimal pairs
(negation, reversed expectations, swapped words). A frozen sentence encoder therefore sees the
topic clearly and the sentiment only faintly, while a human (and a fine-tuned model) can always
read the sentiment from the verdict.

Run (from the repository root):

    python scripts/make_reviews_dataset.py            # writes into data/
    python scripts/make_reviews_dataset.py --out DIR  # writes DIR/reviews_topic, DIR/reviews_sentiment

    python scripts/make_reviews_dataset.py --seed 1 --out /tmp/reviews_seed1  # another draw

The output depends only on the seed (default SEED): running it twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

SEED = 20261122
PER_CELL = 75  # texts per (topic, sentiment) cell: 6 topics x 2 sentiments x 75 = 900
SPLIT_SIZES = {"train": 45, "val": 15, "test": 15}  # per cell, about 60/20/20
MIN_WORDS, MAX_WORDS = 10, 40
SENTIMENTS = ("negative", "positive")

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Topic banks. For each topic:
#   things - how the reviewed item is named ("{thing}" in the templates)
#   again  - what one would do again ("I would {again}")
#   good   - aspect clauses that praise something
#   bad    - aspect clauses that complain about something; bad[i] is about the same thing as
#            good[i], so a review never praises and slates the same aspect
#   verdicts, standalone - (positive, negative) verdict pairs in the topic's own words
#            (see VERDICTS and STANDALONE below)
# --------------------------------------------------------------------------------------------
TOPICS = {
    "films": {
        "things": ["this film", "the movie", "this thriller", "the new comedy", "this drama",
                   "the sequel", "this western", "the animated film"],
        "again": ["watch it again", "see it again", "buy a ticket for it again"],
        "good": [
            "the acting is superb", "the lead actor gives a warm, funny performance",
            "the cinematography is gorgeous", "the soundtrack suits every scene",
            "the plot twists land perfectly", "the dialogue is sharp and witty",
            "the supporting cast steals every scene", "the final act is genuinely moving",
            "the director keeps the pace brisk", "the special effects look convincing",
            "the script has real heart", "the villain is wonderfully menacing",
            "the jokes are genuinely funny",
        ],
        "bad": [
            "the acting is wooden", "the lead actor looks bored",
            "the camera work is shaky and dark", "the soundtrack drowns out the actors",
            "the plot drags in the middle", "the dialogue is clumsy",
            "the supporting cast is wasted", "the ending feels rushed",
            "the running time is far too long", "the special effects look cheap",
            "the script borrows every cliche", "the villain is a cardboard cutout",
            "the jokes fall flat",
        ],
        "verdicts": [
            ("Never once boring.", "Rarely anything but boring."),
            ("I did not want the film to end.", "I could not wait for the film to end."),
            ("I wanted it to go on longer.", "I wanted it to end sooner."),
        ],
        "standalone": [
            ("The cinema laughed and so did I.", "The cinema sighed and so did I."),
        ],
    },
    "books": {
        "things": ["this novel", "the book", "this memoir", "the short story collection",
                   "this mystery novel", "the biography", "this fantasy saga", "the paperback"],
        "again": ["read it again", "pick it up again", "buy another copy"],
        "good": [
            "the prose is elegant", "the characters feel like real people",
            "the chapters are short and gripping", "the narrator has a lovely voice",
            "the plot keeps you guessing", "the world building is rich",
            "the dialogue on the page sparkles", "the author handles grief with care",
            "the last chapter ties everything together", "the descriptions are vivid",
            "the pacing of the middle chapters is perfect", "the translation reads smoothly",
            "the print is easy on the eyes",
        ],
        "bad": [
            "the prose is clunky", "the characters are flat",
            "the chapters ramble on", "the narrator is hard to like",
            "the plot is predictable", "the world building is thin",
            "the dialogue on the page feels stiff", "the author repeats the same points",
            "the last chapter leaves everything hanging", "the descriptions go on for pages",
            "the middle section drags", "the translation is awkward",
            "the print is tiny",
        ],
        "verdicts": [
            ("I could not put it down.", "I could easily put it down."),
            ("I could not stop reading.", "I could not keep reading."),
            ("It is staying on my shelf.", "It is not staying on my shelf."),
            ("I did not want the book to end.", "I could not wait for the book to end."),
            ("I finished it in one sitting.", "I gave up halfway through."),
        ],
        "standalone": [],
    },
    "restaurants": {
        "things": ["this restaurant", "the bistro", "this little cafe", "the noodle bar",
                   "the steakhouse", "this pizzeria", "the seafood place", "the corner diner"],
        "again": ["eat there again", "book a table there again", "go back for dinner"],
        "good": [
            "the waiter was friendly and quick", "the pasta was cooked perfectly",
            "the soup was rich and hot", "the portions were generous",
            "the dessert menu was lovely", "the bread came warm from the oven",
            "the chef came out to say hello", "the wine list was well chosen",
            "the dining room was cosy", "the sauce on the fish was delicious",
            "the prices on the menu were fair", "the table was ready on time",
        ],
        "bad": [
            "the waiter forgot our order", "the pasta was overcooked",
            "the soup arrived lukewarm", "the portions were tiny",
            "the dessert was stale", "the bread was dry",
            "the kitchen took an hour to serve us", "the wine was served warm",
            "the dining room was loud and cramped", "the fish was far too salty",
            "the bill was padded with extras", "the table was sticky",
        ],
        "verdicts": [
            ("I cleaned my plate.", "I left most of my plate."),
            ("We stayed for a second dessert.", "We did not stay for dessert."),
            ("The tip was well earned.", "The tip was hard to justify."),
            ("I did not want the meal to end.", "I could not wait for the meal to end."),
        ],
        "standalone": [],
    },
    "hotels": {
        "things": ["this hotel", "the inn", "this resort", "the guesthouse",
                   "the seaside hotel", "this motel", "the city hotel", "the lodge"],
        "again": ["stay there again", "book a room there again", "spend another night there"],
        "good": [
            "the room was spotless", "the bed was very comfortable",
            "check-in took two minutes", "the breakfast buffet was excellent",
            "the staff at reception were helpful", "the shower had great pressure",
            "the view from the balcony was stunning", "the pool was clean and warm",
            "the corridors were quiet at night", "the bathroom was big and modern",
            "the location was close to everything", "the wifi in the room was fast",
        ],
        "bad": [
            "the room was dusty", "the bed was lumpy",
            "check-in took an hour", "the breakfast buffet was sad and cold",
            "the staff at reception were rude", "the shower barely dripped",
            "the view from the window was a brick wall", "the pool was closed all week",
            "the corridors were noisy all night", "the bathroom was tiny and mouldy",
            "the location was miles from anywhere", "the wifi kept dropping",
        ],
        "verdicts": [
            ("I slept better there than at home.", "I slept worse there than anywhere."),
            ("I did not want to check out.", "I could not wait to check out."),
            ("The room felt like home.", "The room felt like a waiting room."),
            ("I slept like a baby.", "I barely slept a wink."),
        ],
        "standalone": [],
    },
    "phones": {
        "things": ["this phone", "the handset", "the new smartphone", "this budget phone",
                   "the flip phone", "this smartphone", "the flagship phone", "the refurbished phone"],
        "again": ["buy it again", "pay for it again", "order the same model again"],
        "good": [
            "the battery lasts two days", "the screen is bright and sharp",
            "the camera takes lovely photos at night", "the charger is fast",
            "the speakers are loud and clear", "the software updates arrive quickly",
            "the case feels solid", "the touchscreen is very responsive",
            "the fingerprint reader works every time", "the storage is generous",
            "the call quality is crisp", "the setup took five minutes",
        ],
        "bad": [
            "the battery dies by lunch", "the screen scratches easily",
            "the camera struggles in low light", "the charger gets hot",
            "the speakers crackle", "the software is full of bloat",
            "the case feels cheap", "the touchscreen lags",
            "the fingerprint reader rarely works", "the storage fills up fast",
            "the calls keep dropping", "the setup was a headache",
        ],
        "verdicts": [
            ("It has not left my pocket since.", "It has not left the drawer since."),
            ("My old phone can stay retired.", "My old phone is back in use."),
            ("Worth every penny of the price tag.", "Worth barely half the price tag."),
            ("I would not trade it for a newer model.", "I would trade it for any other model."),
        ],
        "standalone": [],
    },
    "trails": {
        "things": ["this trail", "the hike", "the coastal path", "the ridge walk",
                   "this park", "the forest loop", "the lakeside trail", "the canyon hike"],
        "again": ["hike it again", "walk it again", "do that hike again"],
        "good": [
            "the trail was well marked", "the view from the summit was breathtaking",
            "the path was shaded by tall trees", "the waterfall was beautiful",
            "the parking lot had plenty of space", "the wildflowers were out",
            "the climb was steep but steady", "the signs at each junction were clear",
            "the picnic area by the lake was lovely", "the route was quiet and peaceful",
            "the rangers gave us good advice", "the bridge over the creek was sturdy",
        ],
        "bad": [
            "the trail was badly marked", "the view from the summit was hidden by fog",
            "the path was muddy and slippery", "the waterfall was a trickle",
            "the parking lot was full by eight", "the mosquitoes were everywhere",
            "the climb was brutal and rocky", "the signs at the junctions were missing",
            "the picnic area was covered in litter", "the route was crowded and noisy",
            "the rangers' station was closed", "the bridge over the creek was broken",
        ],
        "verdicts": [
            ("Every bend was worth a photo.", "No bend was worth a photo."),
            ("We talked about coming back the whole drive home.",
             "We talked about never coming back the whole drive home."),
            ("I did not want the walk to end.", "I could not wait for the walk to end."),
        ],
        "standalone": [
            ("My legs ached, and I loved every step.", "My legs ached, and I hated every step."),
        ],
    },
}

# Verdict pairs shared by every topic: (positive, negative). Slots: {thing}, {again}.
# Most pairs differ by a word or two, so the verdict's wording alone barely moves an embedding.
# VERDICTS may follow a connector ("Still, ..."); STANDALONE verdicts always start a sentence.
VERDICTS = [
    ("I would {again} in a heartbeat.", "I would not {again} in a hurry."),
    ("I was never once disappointed.", "I was disappointed more than once."),
    ("Much better than I expected.", "Much worse than I expected."),
    ("I would not hesitate to recommend {thing}.", "I would hesitate to recommend {thing}."),
    ("I was pleasantly surprised.", "I was unpleasantly surprised."),
    ("Nobody I shared it with was disappointed.", "Everybody I shared it with was disappointed."),
    ("It did not let me down.", "It let me down."),
    ("Hardly a waste of money.", "Hardly worth the money."),
    ("I'd give it five stars without a second thought.",
     "I'd give it two stars after a second thought."),
    ("Small flaws aside, I loved it.", "Small charms aside, I disliked it."),
    ("I expected little and got a lot.", "I expected a lot and got little."),
    ("The hype is deserved.", "The hype is not deserved."),
    ("I have already told my friends to try {thing}.", "I have already told my friends to skip {thing}."),
    ("Money well spent.", "Money badly spent."),
    ("The flaws are easy to forgive.", "The strengths are easy to forget."),
    ("It was not the disaster I was warned about.", "It was not the delight I was promised."),
]
STANDALONE = [
    ("I expected to hate {thing}, but I ended up loving it.",
     "I expected to love {thing}, but I ended up hating it."),
    ("The reviews were lukewarm, yet {thing} won me over.",
     "The reviews were glowing, yet {thing} left me cold."),
    ("Not bad at all, honestly.", "Not good at all, honestly."),
    ("I went in with low hopes and came out happy.", "I went in with high hopes and came out unhappy."),
    ("My friends warned me off {thing}, and they were wrong.",
     "My friends talked me into {thing}, and they were wrong."),
    ("In the end, the good far outweighed the bad.", "In the end, the bad far outweighed the good."),
    ("Could it have been better? Barely.", "Could it have been better? Easily."),
    ("Five stars, and I rarely give five.", "Two stars, and I rarely give two."),
    ("Honestly, I would {again}.", "Honestly, I would never {again}."),
]

# Connectors between the aspects and a (non-standalone) verdict that follows them, by how the
# aspects relate to the verdict. They depend on (aspect polarity == label), not on the label.
CONNECT_AGREE = ["", "", "All in all,", "In short,", "Overall,"]
CONNECT_OPPOSE = ["Still,", "Even so,", "That said,", "But honestly,", "Despite that,"]
CONNECT_MIXED = ["All in all,", "On balance,", "Overall,", "In the end,", "Weighing it up,"]

# Aspects that follow the verdict, as an afterthought. {A}/{a}: first clause, {b}: second.
AFTER = {
    ("agree",): ["{A}.", "Yes, {a}.", "For one thing, {a}.", "Above all, {a}."],
    ("oppose",): ["Sure, {a}.", "Granted, {a}.", "Admittedly, {a}.",
                  "Yes, {a}, but that hardly mattered."],
    ("agree", "agree"): ["{A}, and {b}.", "For one thing, {a}; for another, {b}."],
    ("oppose", "agree"): ["Sure, {a}, but {b}.", "Granted, {a}; still, {b}.",
                          "Yes, {a}, but {b}."],
    ("agree", "oppose"): ["{A}, even if {b}.", "{A}, though {b}.",
                          "{A}, which makes up for the fact that {b}."],
}

# Which aspects a review mentions, relative to its label: "agree" = same polarity as the
# verdict, "oppose" = the other one. Weighted so that agreeing aspects are only a little more
# common than opposing ones (10 : 8): positive and negative aspect words occur in both classes
# and give the label away only faintly.
PATTERNS = [
    (("oppose",), 2),
    (("agree", "oppose"), 2),
    (("oppose", "agree"), 2),
    (("agree",), 2),
    (("agree", "agree"), 2),
    (("oppose", "oppose"), 1),
]


def capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def decapitalize(text: str) -> str:
    """Lower-case the first letter unless the text starts with the word I (I, I'd, I'm...)."""
    if text.startswith("I ") or text.startswith("I'"):
        return text
    return text[0].lower() + text[1:]


def pick_verdict(rng: random.Random, bank: dict, sentiment: str) -> tuple[str, bool]:
    """A verdict sentence of the given sentiment, slots filled, and whether it is standalone."""
    joinable = VERDICTS + bank["verdicts"]
    standalone = STANDALONE + bank["standalone"]
    index = rng.randrange(len(joinable) + len(standalone))
    is_standalone = index >= len(joinable)
    positive, negative = standalone[index - len(joinable)] if is_standalone else joinable[index]
    template = positive if sentiment == "positive" else negative
    thing = rng.choice(bank["things"])
    again = rng.choice(bank["again"])
    return template.format(thing=thing, again=again), is_standalone


def pick_aspects(rng: random.Random, bank: dict, sentiment: str) -> tuple[list[str], list[str]]:
    """Aspect clauses for one review and their relation ("agree"/"oppose") to the verdict."""
    patterns = [pattern for pattern, _ in PATTERNS]
    weights = [weight for _, weight in PATTERNS]
    pattern = rng.choices(patterns, weights=weights)[0]
    own, other = ("good", "bad") if sentiment == "positive" else ("bad", "good")
    aspects = rng.sample(range(len(bank["good"])), len(pattern))  # distinct aspects
    clauses = [bank[own if relation == "agree" else other][i] for relation, i in zip(pattern, aspects)]
    return clauses, list(pattern)


def join_aspects(rng: random.Random, clauses: list[str], relations: list[str]) -> str:
    """One sentence made of one or two aspect clauses."""
    if len(clauses) == 1:
        return capitalize(clauses[0]) + "."
    first, second = clauses
    if relations[0] == relations[1]:
        joiner = rng.choice([", and ", ", and ", "; also, "])
    else:
        joiner = rng.choice([", but ", ", although ", ", while ", "; on the other hand, "])
    return capitalize(first) + joiner + second + "."


def compose(rng: random.Random, bank: dict, sentiment: str) -> str:
    """One review of the given sentiment about the topic described by ``bank``."""
    clauses, relations = pick_aspects(rng, bank, sentiment)
    verdict, standalone = pick_verdict(rng, bank, sentiment)
    layouts = ["aspects_first", "aspects_first"]
    if tuple(relations) in AFTER:
        layouts.append("verdict_first")

    if rng.choice(layouts) == "verdict_first":
        # The verdict, then the aspects as an afterthought.
        template = rng.choice(AFTER[tuple(relations)])
        second = clauses[1] if len(clauses) == 2 else ""
        return verdict + " " + template.format(A=capitalize(clauses[0]), a=clauses[0], b=second)

    aspects = join_aspects(rng, clauses, relations)
    if standalone:
        return aspects + " " + verdict
    if all(r == "agree" for r in relations):
        connector = rng.choice(CONNECT_AGREE)
    elif all(r == "oppose" for r in relations):
        connector = rng.choice(CONNECT_OPPOSE)
    else:
        connector = rng.choice(CONNECT_MIXED)
    if connector:
        verdict = connector + " " + decapitalize(verdict)
    return aspects + " " + verdict


def word_count(text: str) -> int:
    return len(text.split())


def make_cell(rng: random.Random, topic: str, sentiment: str, taken: set[str]) -> list[str]:
    """PER_CELL distinct reviews for one (topic, sentiment) cell, none already in ``taken``."""
    texts: list[str] = []
    attempts = 0
    while len(texts) < PER_CELL:
        attempts += 1
        if attempts > 100 * PER_CELL:
            raise RuntimeError(f"could not make {PER_CELL} distinct texts for {topic}/{sentiment}")
        text = compose(rng, TOPICS[topic], sentiment)
        if text in taken or not MIN_WORDS <= word_count(text) <= MAX_WORDS:
            continue
        taken.add(text)
        texts.append(text)
    return texts


def make_splits(seed: int = SEED) -> dict[str, list[tuple[str, str, str]]]:
    """{split: [(text, topic, sentiment), ...]}, stratified by (topic, sentiment), rows shuffled."""
    rng = random.Random(seed)
    taken: set[str] = set()
    splits: dict[str, list[tuple[str, str, str]]] = {name: [] for name in SPLIT_SIZES}
    for topic in TOPICS:  # dict order is the order written above
        for sentiment in SENTIMENTS:
            texts = make_cell(rng, topic, sentiment, taken)
            rng.shuffle(texts)
            start = 0
            for name, size in SPLIT_SIZES.items():
                splits[name].extend((text, topic, sentiment) for text in texts[start:start + size])
                start += size
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def write_datasets(out: Path, seed: int = SEED) -> None:
    """Write out/reviews_topic/*.csv and out/reviews_sentiment/*.csv."""
    for name, rows in make_splits(seed).items():
        write_csv(out / "reviews_topic" / f"{name}.csv", [(text, topic) for text, topic, _ in rows])
        write_csv(out / "reviews_sentiment" / f"{name}.csv", [(text, sent) for text, _, sent in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data",
                        help="folder to write reviews_topic/ and reviews_sentiment/ into (default: data/)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"random seed (default {SEED}, the one that made the files in data/)")
    args = parser.parse_args()
    write_datasets(args.out, args.seed)
    print(f"wrote {args.out / 'reviews_topic'} and {args.out / 'reviews_sentiment'}")


if __name__ == "__main__":
    main()
