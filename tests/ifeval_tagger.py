"""A real NLTK part-of-speech tagger for IFBench's `words:start_verb`, trained here.

NLTK's `averaged_perceptron_tagger_eng` ships in no installable package and tests download
nothing, so the tests train NLTK's own `PerceptronTagger` on the small hand-tagged English corpus
below (Penn Treebank tags: imperatives, statements, questions, pronouns, numbers and markdown
marks at the start of a sentence) and save it with NLTK's `save_to_json` where `nltk.pos_tag`
looks: `<root>/taggers/averaged_perceptron_tagger_eng/averaged_perceptron_tagger_eng.
{weights,tagdict,classes}.json`. Both the checks and the reference then tag with this one model.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nltk
import pytest
from nltk.tag import str2tuple
from nltk.tag.perceptron import PerceptronTagger

TAGGER_DIR = Path("taggers") / "averaged_perceptron_tagger_eng"
# One sentence a line, tokens as word_tokenize splits them, `word/TAG`.
CORPUS = """
Write/VB a/DT short/JJ poem/NN about/IN the/DT river/NN ./.
Describe/VB the/DT bridges/NNS of/IN London/NNP ./.
Explain/VB why/WRB rivers/NNS flood/VBP ./.
List/VB three/CD famous/JJ bridges/NNS ./.
Give/VB me/PRP a/DT summary/NN ./.
Tell/VB the/DT students/NNS a/DT story/NN ./.
Visit/VB the/DT museum/NN on/IN Monday/NNP ./.
Cross/VB the/DT bridge/NN at/IN noon/NN ./.
Take/VB the/DT boat/NN to/TO Greenwich/NNP ./.
Read/VB the/DT guide/NN before/IN you/PRP go/VBP ./.
Start/VB with/IN the/DT oldest/JJS bridge/NN ./.
Walk/VB along/IN the/DT river/NN ./.
Consider/VB the/DT tides/NNS ./.
Imagine/VB a/DT city/NN without/IN bridges/NNS ./.
Follow/VB the/DT path/NN east/RB ./.
Look/VB at/IN the/DT water/NN ./.
Remember/VB your/PRP$ ticket/NN ./.
Bring/VB a/DT map/NN and/CC an/DT umbrella/NN ./.
Go/VB home/RB ./.
Run/VB to/TO the/DT station/NN ./.
Stop/VB here/RB ./.
Use/VB simple/JJ words/NNS ./.
Note/VB that/IN the/DT river/NN is/VBZ tidal/JJ ./.
Begin/VB the/DT tour/NN early/RB ./.
Make/VB a/DT list/NN of/IN bridges/NNS ./.
Find/VB the/DT station/NN ./.
Ask/VB the/DT guide/NN a/DT question/NN ./.
Check/VB the/DT times/NNS ./.
Boil/VB the/DT water/NN ./.
Add/VB salt/NN and/CC stir/VB ./.
Compose/VB a/DT letter/NN to/TO a/DT friend/NN ./.
Summarize/VB the/DT story/NN in/IN one/CD sentence/NN ./.
Please/UH write/VB a/DT letter/NN ./.
Please/UH read/VB the/DT notes/NNS ./.
Let/VB 's/PRP go/VB to/TO the/DT river/NN ./.
Do/VB n't/RB stop/VB ./.
The/DT river/NN flows/VBZ through/IN London/NNP ./.
The/DT Thames/NNP is/VBZ a/DT long/JJ river/NN ./.
A/DT bridge/NN crosses/VBZ the/DT river/NN ./.
This/DT note/NN describes/VBZ the/DT bridges/NNS ./.
That/DT bridge/NN is/VBZ old/JJ ./.
Every/DT student/NN needs/VBZ a/DT map/NN ./.
Some/DT bridges/NNS are/VBP very/RB old/JJ ./.
Many/JJ bridges/NNS cross/VBP the/DT Thames/NNP ./.
Bridges/NNS connect/VBP the/DT banks/NNS ./.
Rivers/NNS carry/VBP water/NN to/TO the/DT sea/NN ./.
Students/NNS love/VBP the/DT river/NN ./.
London/NNP has/VBZ many/JJ bridges/NNS ./.
Tower/NNP Bridge/NNP opened/VBD in/IN 1894/CD ./.
Water/NN flows/VBZ under/IN the/DT bridge/NN ./.
Summary/NN :/: the/DT river/NN is/VBZ long/JJ ./.
Hello/UH world/NN ./.
Sure/UH ,/, here/RB is/VBZ a/DT note/NN ./.
Yes/UH ,/, the/DT river/NN is/VBZ long/JJ ./.
Here/RB is/VBZ the/DT answer/NN ./.
There/EX are/VBP many/JJ bridges/NNS ./.
I/PRP think/VBP the/DT river/NN is/VBZ beautiful/JJ ./.
I/PRP saw/VBD them/PRP and/CC they/PRP saw/VBD me/PRP ./.
We/PRP walked/VBD along/IN the/DT river/NN ./.
You/PRP should/MD visit/VB the/DT bridge/NN ./.
They/PRP crossed/VBD the/DT bridge/NN ./.
It/PRP is/VBZ a/DT lovely/JJ river/NN ./.
He/PRP wrote/VBD a/DT note/NN ./.
She/PRP reads/VBZ the/DT guide/NN ./.
My/PRP$ favourite/JJ bridge/NN is/VBZ Tower/NNP Bridge/NNP ./.
Our/PRP$ tour/NN starts/VBZ at/IN noon/NN ./.
Beautiful/JJ bridges/NNS cross/VBP the/DT river/NN ./.
Summer/NN is/VBZ warm/JJ ./.
Winter/NN was/VBD cold/JJ ./.
Music/NN fills/VBZ the/DT streets/NNS ./.
Rain/NN falls/VBZ on/IN the/DT river/NN ./.
Fog/NN covers/VBZ the/DT city/NN ./.
History/NN matters/VBZ ./.
Apples/NNS are/VBP red/JJ ./.
Dogs/NNS bark/VBP ./.
Boats/NNS sail/VBP under/IN the/DT bridge/NN ./.
Tourists/NNS visit/VBP London/NNP ./.
Cities/NNS grow/VBP near/IN rivers/NNS ./.
Ships/NNS were/VBD common/JJ here/RB ./.
Trains/NNS cross/VBP the/DT river/NN too/RB ./.
Children/NNS play/VBP by/IN the/DT water/NN ./.
Birds/NNS fly/VBP over/IN the/DT bridge/NN ./.
Paris/NNP is/VBZ far/RB away/RB ./.
Europe/NNP has/VBZ many/JJ rivers/NNS ./.
Any/DT reply/NN is/VBZ fine/JJ ./.
Each/DT bridge/NN has/VBZ a/DT name/NN ./.
Both/DT banks/NNS are/VBP green/JJ ./.
Wow/UH ,/, look/VB at/IN the/DT bridge/NN !/.
Oh/UH ,/, the/DT river/NN is/VBZ high/JJ ./.
Well/UH ,/, the/DT tour/NN is/VBZ over/RB ./.
Old/JJ bridges/NNS need/VBP care/NN ./.
Long/JJ rivers/NNS flow/VBP slowly/RB ./.
Slowly/RB ,/, the/DT boat/NN moved/VBD ./.
Finally/RB ,/, we/PRP arrived/VBD ./.
It/PRP rained/VBD all/DT day/NN ./.
Bright/JJ bridges/NNS bend/VBP ./.
Calm/JJ currents/NNS carry/VBP cargo/NN ./.
Today/NN we/PRP visit/VBP the/DT river/NN ./.
Yesterday/NN the/DT river/NN flooded/VBD ./.
Quickly/RB ,/, cross/VB the/DT bridge/NN ./.
In/IN London/NNP ,/, the/DT river/NN is/VBZ wide/JJ ./.
On/IN Monday/NNP we/PRP walked/VBD ./.
Why/WRB do/VBP rivers/NNS flood/VB ?/.
What/WP is/VBZ the/DT oldest/JJS bridge/NN ?/.
How/WRB long/JJ is/VBZ the/DT Thames/NNP ?/.
Is/VBZ the/DT river/NN tidal/JJ ?/.
Can/MD you/PRP see/VB the/DT bridge/NN ?/.
Three/CD bridges/NNS cross/VBP here/RB ./.
1/CD ./. Boil/VB the/DT water/NN ./.
2/CD ./. Add/VB the/DT tea/NN ./.
#/# Bridges/NNS of/IN London/NNP
#/# Introduction/NN
-/: Walk/VB the/DT dog/NN
-/: Tower/NNP Bridge/NNP
*/SYM */SYM Summary/NN */SYM */SYM :/: the/DT river/NN is/VBZ long/JJ ./.
*/SYM */SYM Write/VB */SYM */SYM a/DT poem/NN ./.
(/( Read/VB it/PRP )/)
``/`` Start/VB now/RB ''/'' ,/, she/PRP said/VBD ./.
"""


def tagged_sentences() -> list[list[tuple[str, str]]]:
    return [[str2tuple(token) for token in line.split()] for line in CORPUS.strip().splitlines()]


def train_tagger(root: Path) -> Path:
    """Train on CORPUS (seeded: training shuffles) and save under root as NLTK lays it out."""
    tagger = PerceptronTagger(load=False)
    state = random.getstate()
    random.seed(19)
    try:
        tagger.train(tagged_sentences(), nr_iter=8)
    finally:
        random.setstate(state)
    folder = root / TAGGER_DIR
    tagger.save_to_json(lang="eng", loc=str(folder))
    return folder


@contextmanager
def tagger_installed(root: Path) -> Iterator[Path]:
    """A trained tagger under root while the block runs, with root where NLTK looks: first on
    nltk.data.path (this process and forked workers) and in NLTK_DATA (new processes). Both are
    put back afterwards, the list in place (code may hold it), so no other test sees the tagger."""
    with pytest.MonkeyPatch.context() as patch:
        previous = os.getenv("NLTK_DATA")
        patch.setenv("NLTK_DATA", os.pathsep.join(filter(None, [str(root), previous])))
        nltk.data.path.insert(0, str(root))
        try:
            yield train_tagger(root)
        finally:
            nltk.data.path.remove(str(root))
