"""Chunking (issue 10, item 3): text lost or cut apart between the parser and the chunks."""

import io
from email.message import EmailMessage

from quivr_pipelines_tests.fidelity import FidelityCase

SUBJECT = "Dredging permit for the eastern breakwater approved"
TITLE = ("Seasonal migration of juvenile eels through tidal sluices in lowland drainage "
         "channels: a five-year telemetry study")
OPENING = "Glass eels were tagged at four pumping stations."
ABSTRACT = OPENING + " " + " ".join(
    f"In year {i} the passage rate through the sluice gates was recorded at every spring tide "
    f"and compared with river discharge and water temperature." for i in range(1, 14))
ROW = "Northern Star | Berth 7 | frozen cod | 2210"


def _email() -> bytes:
    message = EmailMessage()
    message["Subject"] = SUBJECT
    message["From"] = "Harbour Office <office@harbour.example>"
    message["To"] = "works@harbour.example"
    message["Date"] = "Mon, 30 Nov 2026 08:15:00 +0000"
    message.set_content("See attached.\n")
    return message.as_bytes()


def _sheet() -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Arrivals"
    sheet.append(["Arrivals, week 48"])
    sheet.append([])
    sheet.append(["Vessel", "Berth", "Cargo", "Tonnage"])
    for i in range(150):
        sheet.append([f"Vessel {i}", f"Berth {i % 12}", "grain", 1000 + i])
        if i == 97:
            sheet.append(["Northern Star", "Berth 7", "frozen cod", 2210])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


CASES = [
    FidelityCase(
        name="chunks-email-subject-only.eml",
        build=_email,
        sentence=SUBJECT,
        defect="an e-mail's Subject, From, To and Date were in no chunk: only the body was indexed",
    ),
    FidelityCase(
        name="chunks-sheet-row.xlsx",
        build=_sheet,
        sentence=ROW,
        defect="a sheet's cells were joined by spaces with no row boundaries, split by sub-table detection"
               " and by HTML size into chunks of a few characters; the header row was in the first chunk only",
    ),
    FidelityCase(
        name="chunks-long-title-abstract.md",
        build=lambda: f"# {TITLE}\n\n{ABSTRACT}\n".encode(),
        sentence=f"{TITLE} {OPENING}",
        defect="a title whose abstract did not fit beside it became a chunk of its own, cut from its text",
    ),
]
