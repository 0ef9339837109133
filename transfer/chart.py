"""The comparison's bar chart, as PNG bytes drawn with Pillow (no plotting library needed).

Accuracy and macro-F1 per strategy, with seconds and trainable parameters beside each; `auto`'s
choice is marked. The app charts from the same data; the CLI writes this file beside the table.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from transfer.compare import Comparison

CHART_COLOURS = {"accuracy": (52, 101, 164), "macro-F1": (237, 137, 54)}


def draw_chart(comparison: Comparison) -> bytes:
    """A horizontal bar chart as PNG bytes: accuracy and macro-F1 per strategy, with seconds and
    trainable parameters beside each (Pillow only; the app charts from the same data)."""
    font = ImageFont.load_default(size=14)
    label_width, bar_width, note_width, row_height = 150, 360, 230, 46
    width = label_width + bar_width + note_width
    height = 60 + row_height * len(comparison.rows) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), f"{comparison.dataset}: {len(comparison.rows)} strategies, one split", fill="black", font=font)
    legend_x = 10
    for metric, colour in CHART_COLOURS.items():
        draw.rectangle((legend_x, 34, legend_x + 12, 46), fill=colour)
        draw.text((legend_x + 18, 32), metric, fill="black", font=font)
        legend_x += 110
    for index, row in enumerate(comparison.rows):
        top = 60 + index * row_height
        label = row.strategy + (" (auto)" if row.strategy == comparison.advised else "")
        draw.text((10, top + 12), label, fill="black", font=font)
        if row.error:
            draw.text((label_width, top + 12), "failed", fill=(180, 0, 0), font=font)
            continue
        for offset, (metric, value) in enumerate((("accuracy", row.accuracy), ("macro-F1", row.macro_f1))):
            y = top + 4 + offset * 18
            draw.rectangle((label_width, y, label_width + int(bar_width * (value or 0)), y + 14),
                           fill=CHART_COLOURS[metric])
            draw.text((label_width + int(bar_width * (value or 0)) + 4, y - 1), f"{value:.3f}", fill="black", font=font)
        note = f"{row.seconds:.1f} s, {row.trainable_parameters:,} trained"
        draw.text((label_width + bar_width + 50, top + 12), note, fill=(60, 60, 60), font=font)
    axis_y = 60 + row_height * len(comparison.rows)
    draw.line((label_width, 56, label_width, axis_y), fill="grey")
    for tick in (0.0, 0.5, 1.0):
        x = label_width + int(bar_width * tick)
        draw.text((x - 8, axis_y + 6), f"{tick:g}", fill="grey", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
