"""Make the font subset that `attend explain --format png` embeds.

The PNG renderer draws the same SVG as `--format svg`, rasterised with resvg. So that a fresh
machine with no fonts installed still gets labels, the binary carries a subset of DejaVu Sans
(Latin, Greek, Cyrillic, punctuation, arrows, the sentencepiece/BPE marker glyphs); system fonts
are still used as fallbacks for other scripts (CJK, emoji) when present.

Source: Debian's `fonts-dejavu-core` (apt-get install fonts-dejavu-core). Tool: fontTools
(pip install fonttools). Run from the repository root:

    python3 scripts/make_font.py [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]

The licence (Bitstream Vera / DejaVu, permissive) sits beside the output as DejaVu-LICENSE.
"""

import sys

from fontTools import subset

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
OUT = "crates/attend-viz/assets/DejaVuSans-subset.ttf"
RANGES = [
    (0x0020, 0x024F),  # Basic Latin, Latin-1, Latin Extended-A/B (Ġ, Ċ of byte-level BPE)
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x2000, 0x206F),  # General punctuation
    (0x2190, 0x21FF),  # Arrows
    (0x2580, 0x259F),  # Block elements (▁ of sentencepiece)
]

unicodes = [u for lo, hi in RANGES for u in range(lo, hi + 1)]
options = subset.Options()
options.layout_features = ["kern", "liga"]
options.hinting = False
options.name_IDs = ["*"]
font = subset.load_font(SRC, options)
sub = subset.Subsetter(options)
sub.populate(unicodes=unicodes)
sub.subset(font)
subset.save_font(font, OUT, options)
print("wrote", OUT)
