#!/usr/bin/env python3
"""Draw the front-panel illustrations of the staff guides with Pillow.

Writes panel-lights.<lang>.png (the LED states) and panel-beeps.<lang>.png
(the buzzer patterns) for lang in vi and en, next to this script. The
patterns and timings are those of sohoa/panel.py and sohoa/daemon.py; rerun
the script when they change:

    python docs/images/render_panel.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
FONT_DIR = Path("/usr/share/fonts/truetype/noto")
WIDTH = 1100
ROW_HEIGHT = 120
MARGIN = 24
GREEN = (40, 200, 80)
RED = (225, 45, 45)
UNLIT = (70, 72, 78)
PANEL = (36, 38, 44)
INK = (25, 25, 30)
GREY = (110, 110, 120)

# (green LED, red LED, title, explanation) per row; each LED is "on", "blink", "fast" or "off".
LIGHTS = {
    "vi": [
        ("on", "off", "Xanh sáng liên tục", "Sẵn sàng: đặt giấy vào khay và bấm nút."),
        ("blink", "off", "Xanh nhấp nháy", "Đang quét hoặc đang xử lý văn bản. Chờ, không cần làm gì."),
        ("off", "on", "Đỏ sáng liên tục", "Cần người xử lý: kẹt giấy, nắp mở, khay trống, lỗi máy quét, đầy bộ nhớ."),
        ("off", "fast", "Đỏ nhấp nháy nhanh", "Chờ thiết bị ký số (token): cắm token vào, hoặc báo bộ phận CNTT."),
        ("off", "off", "Cả hai đèn tắt", "Thiết bị đang khởi động hoặc dịch vụ đã dừng. Chờ 2 phút, rồi báo CNTT."),
    ],
    "en": [
        ("on", "off", "Green steady", "Ready: load the paper and press the button."),
        ("blink", "off", "Green blinking", "Scanning or processing documents. Wait; nothing to do."),
        ("off", "on", "Red steady", "A person is needed: jam, cover open, empty tray, scanner error, disk full."),
        ("off", "fast", "Red blinking fast", "Waiting for the signing token: plug it in, or call IT."),
        ("off", "off", "Both lights off", "The box is starting or the service stopped. Wait 2 minutes, then call IT."),
    ],
}
# (beeps as (seconds on, seconds off) pairs, title, explanation) per row.
BEEPS = {
    "vi": [
        ([(0.1, 0.1)], "Một tiếng bíp ngắn", "Văn bản đã được ký xong, hoặc đã kết thúc văn bản quét trên mặt kính."),
        ([(0.8, 0.2)], "Một tiếng bíp dài, đèn đỏ sáng cùng lúc", "Đã dừng lần quét hoặc văn bản bằng cách giữ nút; các trang vẫn được giữ."),
        ([(0.1, 0.15), (0.1, 0.15)], "Hai tiếng bíp ngắn, đèn đỏ chớp hai lần", "Văn bản có thể trùng với văn bản đã quét trước; cả hai được giữ."),
        ([(0.4, 0.2), (0.4, 0.2), (0.4, 0.2)], "Ba tiếng bíp dài", "Cần người xử lý: xem đèn đỏ."),
    ],
    "en": [
        ([(0.1, 0.1)], "One short beep", "The document is signed, or a flatbed document is finished."),
        ([(0.8, 0.2)], "One long beep, red lit as long", "The scan or document was stopped with a long press; its pages are kept."),
        ([(0.1, 0.15), (0.1, 0.15)], "Two short beeps, red flashes twice", "The document may duplicate an earlier one; both are kept."),
        ([(0.4, 0.2), (0.4, 0.2), (0.4, 0.2)], "Three long beeps", "A person is needed: look at the red light."),
    ],
}
TITLES = {
    "vi": ("Ý nghĩa của đèn", "Ý nghĩa của tiếng bíp (khi thiết bị có còi)"),
    "en": ("What the lights mean", "What the beeps mean (when the box has a buzzer)"),
}


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / ("NotoSans-Bold.ttf" if bold else "NotoSans-Regular.ttf")), size)


def draw_led(draw: ImageDraw.ImageDraw, centre: tuple[int, int], colour: tuple[int, int, int], mode: str) -> None:
    """Draw one LED: lit with a halo, unlit grey, or blinking as a lit LED inside dashed rings."""
    x, y = centre
    radius = 16
    if mode in ("blink", "fast"):
        rings = 1 if mode == "blink" else 2
        for ring in range(rings):
            outer = radius + 10 + ring * 8
            for start in range(0, 360, 30):
                draw.arc((x - outer, y - outer, x + outer, y + outer), start, start + 15, fill=colour, width=3)
    if mode != "off":
        draw.ellipse((x - radius - 5, y - radius - 5, x + radius + 5, y + radius + 5), fill=tuple(min(255, c // 2 + 120) for c in colour))
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour if mode != "off" else UNLIT, outline=(20, 20, 20), width=2)


def draw_panel(draw: ImageDraw.ImageDraw, top: int, green: str, red: str) -> None:
    """Draw the panel: the push button and the green and red LEDs."""
    left = MARGIN
    draw.rounded_rectangle((left, top + 10, left + 260, top + ROW_HEIGHT - 10), radius=18, fill=PANEL)
    middle = top + ROW_HEIGHT // 2
    draw.ellipse((left + 24, middle - 30, left + 84, middle + 30), fill=(200, 200, 205), outline=(140, 140, 150), width=4)
    draw_led(draw, (left + 150, middle), GREEN, green)
    draw_led(draw, (left + 215, middle), RED, red)


def draw_caption(draw: ImageDraw.ImageDraw, left: int, top: int, title: str, text: str) -> None:
    draw.text((left, top + 26), title, font=font(28, bold=True), fill=INK)
    draw.text((left, top + 66), text, font=font(22), fill=GREY)


def render_lights(language: str) -> Image.Image:
    rows = LIGHTS[language]
    image = Image.new("RGB", (WIDTH, 80 + ROW_HEIGHT * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 18), TITLES[language][0], font=font(34, bold=True), fill=INK)
    for index, (green, red, title, text) in enumerate(rows):
        top = 70 + index * ROW_HEIGHT
        draw_panel(draw, top, green, red)
        draw_caption(draw, MARGIN + 300, top, title, text)
    return image


def render_beeps(language: str) -> Image.Image:
    rows = BEEPS[language]
    image = Image.new("RGB", (WIDTH, 80 + ROW_HEIGHT * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 18), TITLES[language][1], font=font(34, bold=True), fill=INK)
    pixels_per_second = 160
    for index, (pattern, title, text) in enumerate(rows):
        top = 70 + index * ROW_HEIGHT
        baseline = top + ROW_HEIGHT // 2 + 20
        x = MARGIN
        draw.line((MARGIN, baseline, MARGIN + 260, baseline), fill=GREY, width=2)
        for on_seconds, off_seconds in pattern:
            width = int(on_seconds * pixels_per_second)
            draw.rectangle((x, baseline - 40, x + width, baseline), fill=INK)
            x += width + int(off_seconds * pixels_per_second)
        draw_caption(draw, MARGIN + 300, top, title, text)
    return image


def main() -> None:
    for language in ("vi", "en"):
        render_lights(language).save(HERE / f"panel-lights.{language}.png", optimize=True)
        render_beeps(language).save(HERE / f"panel-beeps.{language}.png", optimize=True)


if __name__ == "__main__":
    main()
