"""The box's front panel through gpiozero: the scan button, extra profile buttons, two LEDs, an optional buzzer."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

from gpiozero import LED, Button, Buzzer, Device
from gpiozero.exc import GPIOPinInUse, GPIOZeroError
from gpiozero.pins import Factory

from sohoa.config import ButtonConfig, GpioConfig
from sohoa.errors import ConfigError, HardwareError
from sohoa.i18n import N_

log = logging.getLogger(__name__)

STATUSES = ("idle", "busy", "error", "attention", "off")
BUSY_BLINK_SECONDS = 0.5
ATTENTION_BLINK_SECONDS = 0.25
DONE_BEEP_SECONDS = 0.1
ERROR_BEEP_SECONDS = 0.4
ERROR_BEEP_PAUSE_SECONDS = 0.2
ERROR_BEEP_COUNT = 3
# A probable duplicate: two short beeps, unlike the one of a finished job and
# the three long ones of an error, and the red LED flashes as often.
DUPLICATE_BEEP_SECONDS = 0.1
DUPLICATE_BEEP_PAUSE_SECONDS = 0.15
DUPLICATE_BEEP_COUNT = 2
DUPLICATE_FLASH_SECONDS = 0.15
# A cancelled job: one long beep, and the red LED lit as long, unlike every other signal.
CANCEL_BEEP_SECONDS = 0.8

# LED modes (green, red) for each status.
_LED_PATTERNS = {
    "idle": ("on", "off"),
    "busy": ("blink", "off"),
    "error": ("off", "on"),
    "attention": ("off", "blink"),
    "off": ("off", "off"),
}


class Panel:
    """The box's front panel: the scan button, extra profile buttons, a green and a red LED, optionally a buzzer.

    Wiring (BCM pins from GpioConfig): each button connects its pin to ground
    and the pin uses the internal pull-up, so it reads low while pressed. Each
    LED is active high: pin, series resistor (about 330 ohm), LED anode,
    cathode to ground. The buzzer is an active buzzer, active high, on
    ``buzzer_pin``.

    A short press counts when the button is released: the scan button calls
    ``on_press()``, an extra button of ``gpio.buttons`` calls
    ``on_press(profile=NAME)``. Holding any button ``gpio.long_press_seconds``
    calls ``on_long_press()`` at that moment, and its release then counts as
    no press, so a long press never starts a scan. The callbacks run on
    gpiozero's threads (on mock pins, the hold callback on gpiozero's hold
    thread and the others on the thread that drives the pin), so they must
    only enqueue work for the daemon and return. Presses of one button closer
    together than ``button_bounce_ms`` count once, as measured by ``clock``
    (monotonic seconds, replaceable in tests).

    The gpiozero devices are public as ``button``, ``profile_buttons`` (the
    extra buttons, in ``gpio.buttons`` order), ``green_led``, ``red_led`` and
    ``buzzer`` (None without ``buzzer_pin``) for diagnostics and tests.
    """

    def __init__(
        self,
        gpio: GpioConfig,
        on_press: Callable[..., None],
        *,
        on_long_press: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = gpio
        self._on_press = on_press
        self._on_long_press = on_long_press
        self._clock = clock
        self._bounce_seconds = gpio.button_bounce_ms / 1000
        # Per button pin: when its last press counted, and whether its current press was held long.
        self._last_press: dict[int, float] = {}
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._closed = False

        self._own_factory = _create_pin_factory(gpio.pin_factory)
        self._devices: list[Device] = []
        try:
            self.button = self._add(self._make_button(gpio.button_pin))
            self.profile_buttons: list[tuple[ButtonConfig, Button]] = [
                (entry, self._add(self._make_button(entry.pin))) for entry in gpio.buttons
            ]
            self.green_led = self._add(LED(gpio.green_led_pin, pin_factory=self._own_factory))
            self.red_led = self._add(LED(gpio.red_led_pin, pin_factory=self._own_factory))
            self.buzzer: Buzzer | None = None
            if gpio.buzzer_pin is not None:
                self.buzzer = self._add(Buzzer(gpio.buzzer_pin, pin_factory=self._own_factory))
        except (GPIOZeroError, OSError) as exc:
            self._close_devices()
            raise HardwareError(
                N_(
                    "Cannot set up the front panel on BCM pins {pins} (pin factory {factory}): {detail}. "
                    "Check the [gpio] section of the configuration and that no other program uses these pins."
                ),
                pins=_describe_pins(gpio),
                factory=gpio.pin_factory or "default",
                detail=_describe_gpio_error(exc),
            ) from exc

        self._wire(self.button, gpio.button_pin, None)
        for entry, button in self.profile_buttons:
            self._wire(button, entry.pin, entry.profile)
        log.info("Front panel ready on BCM pins %s", _describe_pins(gpio))

    def button_for(self, profile: str | None) -> Button:
        """Return the scan button for None, else the first extra button of ``profile``; KeyError if there is none."""
        if profile is None:
            return self.button
        for entry, button in self.profile_buttons:
            if entry.profile == profile:
                return button
        raise KeyError(f"no button for capture profile {profile!r}")

    def show(self, status: str) -> None:
        """Set the LEDs for ``status``, one of STATUSES.

        idle: green steady. busy: green blinking. error: red steady.
        attention: red blinking (waiting for the operator, such as a missing
        token). off: both off. Blinking runs in gpiozero's background thread.
        """
        if status not in _LED_PATTERNS:
            raise ValueError(f"invalid panel status {status!r}, expected one of {', '.join(STATUSES)}")
        green_mode, red_mode = _LED_PATTERNS[status]

        with self._lock, self._translate_errors():
            _drive_led(self.green_led, green_mode, BUSY_BLINK_SECONDS)
            _drive_led(self.red_led, red_mode, ATTENTION_BLINK_SECONDS)
        log.debug("Front panel shows %s", status)

    def beep_done(self) -> None:
        """Beep once, briefly, in the background. Does nothing without a buzzer."""
        self._beep(DONE_BEEP_SECONDS, DONE_BEEP_SECONDS, 1)

    def beep_error(self) -> None:
        """Beep ERROR_BEEP_COUNT long beeps in the background. Does nothing without a buzzer."""
        self._beep(ERROR_BEEP_SECONDS, ERROR_BEEP_PAUSE_SECONDS, ERROR_BEEP_COUNT)

    def signal_duplicate(self) -> None:
        """Beep twice briefly and flash the red LED twice, in the background.

        The red LED flashes only while it is off, because it ends off and must
        not hide an error the red LED is showing. Without a buzzer only the LED
        flashes.
        """
        with self._lock, self._translate_errors():
            if not self.red_led.is_lit:
                self.red_led.blink(
                    on_time=DUPLICATE_FLASH_SECONDS, off_time=DUPLICATE_FLASH_SECONDS, n=DUPLICATE_BEEP_COUNT, background=True
                )
        self._beep(DUPLICATE_BEEP_SECONDS, DUPLICATE_BEEP_PAUSE_SECONDS, DUPLICATE_BEEP_COUNT)

    def signal_cancelled(self) -> None:
        """Beep once for CANCEL_BEEP_SECONDS and light the red LED as long, in the background.

        As for a duplicate, the red LED is used only while it is off, so an
        error it shows is not hidden. Without a buzzer only the LED lights.
        """
        with self._lock, self._translate_errors():
            if not self.red_led.is_lit:
                self.red_led.blink(on_time=CANCEL_BEEP_SECONDS, off_time=0, n=1, background=True)
        self._beep(CANCEL_BEEP_SECONDS, 0, 1)

    def close(self) -> None:
        """Switch everything off and release the pins, so devices can be created on them again."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._translate_errors():
                # A released pin can keep driving its last level, so switch off first.
                for output in (self.green_led, self.red_led, self.buzzer):
                    if output is not None:
                        output.off()
                self._close_devices()
        log.info("Front panel closed")

    def _make_button(self, pin: int) -> Button:
        return Button(
            pin,
            pull_up=True,
            bounce_time=self._bounce_seconds or None,
            hold_time=self._config.long_press_seconds,
            pin_factory=self._own_factory,
        )

    def _wire(self, button: Button, pin: int, profile: str | None) -> None:
        button.when_pressed = lambda: self._held.discard(pin)
        button.when_held = lambda: self._handle_hold(pin, profile)
        button.when_released = lambda: self._handle_release(pin, profile)

    def _handle_hold(self, pin: int, profile: str | None) -> None:
        self._held.add(pin)
        log.info("Button on BCM pin %d (profile %s) held for %.1f s", pin, profile or "default", self._config.long_press_seconds)
        if self._on_long_press is not None:
            self._call(self._on_long_press)

    def _handle_release(self, pin: int, profile: str | None) -> None:
        if pin in self._held:
            self._held.discard(pin)
            log.debug("Release after a long press on BCM pin %d: not a press", pin)
            return

        # gpiozero 2.0.1's MockPin ignores bounce_time, so presses within the
        # bounce time are also dropped here, whatever the pin factory.
        now = self._clock()
        last = self._last_press.get(pin)
        if last is not None and now - last < self._bounce_seconds:
            log.debug("Ignored a press on BCM pin %d %.3f s after the previous one (bounce)", pin, now - last)
            return
        self._last_press[pin] = now

        log.info("Button on BCM pin %d pressed (profile %s)", pin, profile or "default")
        if profile is None:
            self._call(self._on_press)
        else:
            self._call(self._on_press, profile=profile)

    @staticmethod
    def _call(handler: Callable[..., object], **arguments: object) -> None:
        try:
            handler(**arguments)
        except Exception:
            # An exception would end gpiozero's event thread and with it every later press.
            log.exception("Button handler failed")

    def _beep(self, on_seconds: float, off_seconds: float, count: int) -> None:
        if self.buzzer is None:
            return
        with self._lock, self._translate_errors():
            self.buzzer.beep(on_time=on_seconds, off_time=off_seconds, n=count, background=True)

    def _add(self, device: Device) -> Device:
        self._devices.append(device)
        return device

    def _close_devices(self) -> None:
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()
        if self._own_factory is not None:
            self._own_factory.close()

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except (GPIOZeroError, OSError) as exc:
            raise HardwareError(
                N_("The front panel on BCM pins {pins} failed: {detail}. Check the wiring and restart the daemon."),
                pins=_describe_pins(self._config),
                detail=exc,
            ) from exc


def _drive_led(led: LED, mode: str, blink_seconds: float) -> None:
    if mode == "on":
        led.on()
    elif mode == "blink":
        led.blink(on_time=blink_seconds, off_time=blink_seconds, background=True)
    else:
        led.off()


def _create_pin_factory(name: str) -> Factory | None:
    """Create the gpiozero pin factory registered as ``name``, or return None for gpiozero's default."""
    if not name:
        return None
    factories = entry_points(group="gpiozero_pin_factories")
    matches = [entry for entry in factories if entry.name == name.lower()]
    if not matches:
        raise ConfigError(
            N_("Unknown GPIO pin factory {factory} in gpio.pin_factory. Use an empty string for the default, or one of: {choices}."),
            factory=name,
            choices=", ".join(sorted(entry.name for entry in factories)),
        )
    try:
        return matches[0].load()()
    except (GPIOZeroError, ImportError, OSError) as exc:
        raise HardwareError(
            N_("Cannot load the GPIO pin factory {factory}: {detail}. Install its library or choose another gpio.pin_factory."),
            factory=name,
            detail=exc,
        ) from exc


def _describe_gpio_error(exc: Exception) -> str:
    """Return ``exc`` for a person: gpiozero's pin-in-use message names a Python object instead of a program."""
    if isinstance(exc, GPIOPinInUse):
        pin = str(exc).split(" is already in use", 1)[0]
        return f"{pin} is already in use by another device or program"
    return str(exc)


def _describe_pins(gpio: GpioConfig) -> str:
    pins = f"button {gpio.button_pin}, green LED {gpio.green_led_pin}, red LED {gpio.red_led_pin}"
    if gpio.buzzer_pin is not None:
        pins += f", buzzer {gpio.buzzer_pin}"
    for entry in gpio.buttons:
        pins += f", button {entry.pin} (profile {entry.profile})"
    return pins
