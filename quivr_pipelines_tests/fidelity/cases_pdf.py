"""PDFs whose text pdfminer alone lost: a second reader per page (issue 10, item 2).

The issue's ToUnicode-font loss (two of three lines) was not reproduced: `pdf_files.tounicode_font`
and the variants tried by hand (Type0 Identity-H, bfchar and bfrange, Tj/TJ, Tm/Td) were read
whole by pdfminer before the fallback too. Its case below is a regression guard (all three
lines in order), not a proof of the fix.
"""

from quivr_pipelines_tests.fidelity import FidelityCase
from quivr_pipelines_tests.fidelity import pdf_files as pdf

TOUNICODE_LINES = ["Beekeepers inspect each frame for queen cells in spring.",
                   "Smoke calms the colony before the hive is opened.",
                   "Honey is extracted once the cells are capped with wax."]

CASES = [
    FidelityCase(
        name="pdf-broken-colour-space.pdf",
        build=lambda: pdf.broken_colour_space(["The harbour pilot boards every tanker at the outer buoy."]),
        sentence="The harbour pilot boards every tanker at the outer buoy.",
        defect="pdfminer raised on an ICCBased colour space naming a missing object: 'corrupt: damaged PDF'",
    ),
    FidelityCase(
        name="pdf-later-page-trips-pdfminer.pdf",
        build=lambda: pdf.broken_colour_space(["Glaciers retreat faster where meltwater lubricates the bed."],
                                              pages_before=1, pages_after=1),
        sentence="Glaciers retreat faster where meltwater lubricates the bed.",
        defect="an error on page 2 kept page 1 and dropped the rest, the document still 'ingested'",
    ),
    FidelityCase(
        name="pdf-rotated-text.pdf",
        build=lambda: pdf.rotated_page(["Quarterly rainfall totals by catchment basin"]),
        sentence="Quarterly rainfall totals by catchment basin",
        defect="text running up the page was stored one letter a line, scrambled ('R o t t a e d')",
    ),
    FidelityCase(
        name="pdf-letter-spaced.pdf",
        build=lambda: pdf.letter_spaced(["MIGRATORY SWIFTS", "Swifts sleep on the wing during migration."]),
        sentence="Swifts sleep on the wing during migration.",
        defect="character spacing (Tc) made pdfminer print every letter as a word ('S w i f t s')",
    ),
]

# The ligature comes out of the font as U+FB03 (its glyph name, /ffi) instead of a NUL; the
# text-fidelity layer (parsing/fidelity.py, NFKC) makes it "ffi".
CASES += [
    FidelityCase(
        name="pdf-ligature-nul-tounicode.pdf",
        build=lambda: pdf.ligature_behind_bogus_tounicode("Surveyors found the difficulties of efficient office work."),
        sentence="Surveyors found the difficulties of efficient office work.",
        defect="a ToUnicode CMap mapping the /ffi glyph to <0000>: 'di\\x00culties' in pdfminer and pypdf",
    ),
    FidelityCase(
        name="pdf-tounicode-font.pdf",
        build=lambda: pdf.tounicode_font(TOUNICODE_LINES),
        sentence=" ".join(TOUNICODE_LINES),  # all three lines, in order
        defect="text in a font with an embedded ToUnicode CMap: only the CMap gives its codes meaning",
    ),
]
