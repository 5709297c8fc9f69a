"""Panel on gpiozero's MockFactory: the button, the LED patterns and the buzzer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from gpiozero import LED, Button, Device
from gpiozero.pins.mock import MockFactory, MockPin

from sohoa import panel as panel_module
from sohoa.config import GpioConfig
from sohoa.errors import ConfigError, HardwareError
from sohoa.panel import Panel

TIMEOUT = 5.0
BUTTON, GREEN, RED, BUZZER = 17, 22, 27, 5


class NotifyingMockPin(MockPin):
    """A MockPin that wakes up the tests waiting in wait_for_states on every change."""

    changed = threading.Condition()

    def _change_state(self, value: bool) -> bool:
        with self.changed:
            result = super()._change_state(value)
            self.changed.notify_all()
        return result


def wait_for_states(pin: MockPin, predicate: Callable[[list[bool]], bool], timeout: float = TIMEOUT) -> list[bool]:
    """Wait until ``predicate`` accepts the pin's history of states and return that history."""
    def history() -> list[bool]:
        return [entry.state for entry in pin.states]

    with NotifyingMockPin.changed:
        matched = NotifyingMockPin.changed.wait_for(lambda: predicate(history()), timeout)
    assert matched, f"pin {pin} states within {timeout} s: {history()}"
    return history()


def has_blinked(states: list[bool]) -> bool:
    return [False, True, False, True] == states[:4]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    mock_factory = MockFactory(pin_class=NotifyingMockPin)
    Device.pin_factory = mock_factory
    yield mock_factory
    mock_factory.reset()
    Device.pin_factory = previous


@pytest.fixture
def fast_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUSY_BLINK_SECONDS", "ATTENTION_BLINK_SECONDS", "DONE_BEEP_SECONDS", "ERROR_BEEP_SECONDS", "ERROR_BEEP_PAUSE_SECONDS"):
        monkeypatch.setattr(panel_module, name, 0.01)


@pytest.fixture
def make_panel(factory: MockFactory) -> Iterator[Callable[..., Panel]]:
    panels: list[Panel] = []

    def make(on_press: Callable[[], None] = lambda: None, **fields: object) -> Panel:
        config = GpioConfig(button_pin=BUTTON, green_led_pin=GREEN, red_led_pin=RED, **fields)
        created = Panel(config, on_press, clock=FakeClock())
        panels.append(created)
        return created

    yield make
    for created in panels:
        created.close()


def press(pin: MockPin) -> None:
    pin.drive_low()
    pin.drive_high()


def test_press_calls_handler_once(factory: MockFactory) -> None:
    presses: list[int] = []
    clock = FakeClock()
    front = Panel(GpioConfig(button_pin=BUTTON, button_bounce_ms=50), lambda: presses.append(1), clock=clock)
    button_pin = factory.pin(BUTTON)
    try:
        # Three edges within the bounce time count as one press.
        press(button_pin)
        press(button_pin)
        clock.now += 0.049
        press(button_pin)
        assert len(presses) == 1

        clock.now += 0.051
        press(button_pin)
        assert len(presses) == 2
    finally:
        front.close()


def test_button_uses_pull_up(make_panel: Callable[..., Panel], factory: MockFactory) -> None:
    make_panel()

    assert factory.pin(BUTTON).pull == "up"
    assert factory.pin(BUTTON).state is True


def test_press_handler_error_keeps_button(factory: MockFactory) -> None:
    presses: list[int] = []

    def failing_handler() -> None:
        presses.append(1)
        raise RuntimeError("queue full")

    clock = FakeClock()
    front = Panel(GpioConfig(button_pin=BUTTON, green_led_pin=GREEN, red_led_pin=RED), failing_handler, clock=clock)
    try:
        press(factory.pin(BUTTON))
        clock.now += 1
        press(factory.pin(BUTTON))
    finally:
        front.close()

    assert len(presses) == 2


@pytest.mark.parametrize(
    ("status", "green", "red"),
    [("idle", True, False), ("error", False, True), ("off", False, False)],
)
def test_show_steady_status(make_panel: Callable[..., Panel], factory: MockFactory, status: str, green: bool, red: bool) -> None:
    front = make_panel()
    front.show("attention")

    front.show(status)

    assert factory.pin(GREEN).state is green
    assert factory.pin(RED).state is red


def test_show_busy_blinks_green(make_panel: Callable[..., Panel], factory: MockFactory, fast_patterns: None) -> None:
    front = make_panel()
    front.show("error")
    factory.pin(GREEN).clear_states()

    front.show("busy")

    wait_for_states(factory.pin(GREEN), has_blinked)
    assert factory.pin(RED).state is False


def test_show_attention_blinks_red(make_panel: Callable[..., Panel], factory: MockFactory, fast_patterns: None) -> None:
    front = make_panel()
    front.show("idle")
    factory.pin(RED).clear_states()

    front.show("attention")

    wait_for_states(factory.pin(RED), has_blinked)
    assert factory.pin(GREEN).state is False


def test_show_idle_stops_blinking(make_panel: Callable[..., Panel], factory: MockFactory, fast_patterns: None) -> None:
    front = make_panel()
    front.show("busy")
    wait_for_states(factory.pin(GREEN), lambda states: len(states) >= 3)

    front.show("idle")
    assert factory.pin(GREEN).state is True
    # show() returns after gpiozero has joined the blink thread, so nothing changes the pin any more.
    factory.pin(GREEN).clear_states()
    front.show("idle")
    assert [entry.state for entry in factory.pin(GREEN).states] == [True]


def test_show_rejects_unknown_status(make_panel: Callable[..., Panel]) -> None:
    front = make_panel()

    with pytest.raises(ValueError, match="blinking"):
        front.show("blinking")


def test_beep_done_single_beep(make_panel: Callable[..., Panel], factory: MockFactory, fast_patterns: None) -> None:
    front = make_panel(buzzer_pin=BUZZER)

    front.beep_done()

    states = wait_for_states(factory.pin(BUZZER), lambda states: len(states) >= 3)
    assert states == [False, True, False]


def test_beep_error_three_beeps(make_panel: Callable[..., Panel], factory: MockFactory, fast_patterns: None) -> None:
    front = make_panel(buzzer_pin=BUZZER)

    front.beep_error()

    states = wait_for_states(factory.pin(BUZZER), lambda states: len(states) >= 7)
    assert states == [False, True, False, True, False, True, False]


def test_beep_without_buzzer_does_nothing(make_panel: Callable[..., Panel]) -> None:
    front = make_panel()

    front.beep_done()
    front.beep_error()

    assert front.buzzer is None


def test_close_releases_pins(make_panel: Callable[..., Panel], factory: MockFactory) -> None:
    front = make_panel(buzzer_pin=BUZZER)
    front.show("idle")

    front.close()

    assert factory.pin(GREEN).state is False
    with LED(GREEN) as green, LED(RED) as red, Button(BUTTON) as button, LED(BUZZER) as buzzer:
        assert not green.closed
        assert not red.closed
        assert not button.closed
        assert not buzzer.closed
    second = make_panel(buzzer_pin=BUZZER)
    second.show("error")
    assert factory.pin(RED).state is True


def test_pin_in_use_raises_hardware_error(make_panel: Callable[..., Panel], factory: MockFactory) -> None:
    make_panel()
    conflicting = GpioConfig(button_pin=23, green_led_pin=GREEN, red_led_pin=24)

    with pytest.raises(HardwareError, match="green LED 22"):
        Panel(conflicting, lambda: None)

    # The failed panel released the button it had already created.
    with Button(23) as button:
        assert not button.closed


def test_show_after_close_raises_hardware_error(make_panel: Callable[..., Panel]) -> None:
    front = make_panel()
    front.close()

    with pytest.raises(HardwareError, match="front panel"):
        front.show("idle")


def test_mock_factory_from_config() -> None:
    presses: list[int] = []
    config = GpioConfig(pin_factory="mock", button_pin=BUTTON, green_led_pin=GREEN, red_led_pin=RED)
    front = Panel(config, lambda: presses.append(1))
    try:
        # A press counts on release, because holding the button is a long press.
        front.button.pin.drive_low()
        front.button.pin.drive_high()
        front.show("error")
        assert presses == [1]
        assert front.red_led.pin.state is True
        assert front.green_led.pin.state is False
    finally:
        front.close()


def test_unknown_pin_factory_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="mock"):
        Panel(GpioConfig(pin_factory="no-such-factory"), lambda: None)
