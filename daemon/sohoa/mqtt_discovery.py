"""Home Assistant MQTT discovery: one device per box with a sensor set and an availability sensor.

Each entity's config is published retained on
``{homeassistant_prefix}/{component}/{node_id}/{key}/config`` and reads the
box's retained state topic with a value template, so Home Assistant needs no
other integration. Home Assistant publishes ``online`` on
``{homeassistant_prefix}/status`` when it starts; the reporter then sends the
configs again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sohoa import __version__
from sohoa.i18n import N_, gettext as _

# A template for binary sensors that keeps a null field "unknown": Home
# Assistant's MQTT binary sensor treats the rendered text "None" as unknown.
_BOOLEAN_TEMPLATE = "{{% if value_json.{field} is none %}}None{{% elif value_json.{field} %}}ON{{% else %}}OFF{{% endif %}}"
_BACKLOG_TEMPLATE = (
    "{{ value_json.queue.interrupted + value_json.queue.to_recognize + value_json.queue.to_build"
    " + value_json.queue.to_sign + value_json.queue.to_upload }}"
)


@dataclass(frozen=True)
class Entity:
    key: str
    component: str  # "sensor" or "binary_sensor"
    name: str  # English msgid, translated when published
    value_template: str
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    icon: str | None = None


ENTITIES = (
    Entity("state", "sensor", N_("State"), "{{ value_json.state }}", icon="mdi:scanner"),
    Entity("message", "sensor", N_("Status message"), "{{ value_json.message }}", icon="mdi:message-text"),
    Entity("alert_code", "sensor", N_("Alert code"), "{{ value_json.alert_code or 'none' }}", icon="mdi:alert"),
    Entity("backlog", "sensor", N_("Documents in progress"), _BACKLOG_TEMPLATE, state_class="measurement", icon="mdi:tray-full"),
    Entity("failed", "sensor", N_("Failed documents"), "{{ value_json.queue.failed }}", state_class="measurement", icon="mdi:file-alert"),
    Entity("documents_today", "sensor", N_("Documents today"), "{{ value_json.digitized.documents_today }}", state_class="measurement"),
    Entity("pages_today", "sensor", N_("Pages today"), "{{ value_json.digitized.pages_today }}", state_class="measurement"),
    Entity("documents_total", "sensor", N_("Documents in total"), "{{ value_json.digitized.documents_total }}", state_class="total_increasing"),
    Entity("pages_total", "sensor", N_("Pages in total"), "{{ value_json.digitized.pages_total }}", state_class="total_increasing"),
    Entity("disk_free", "sensor", N_("Free disk space"), "{{ value_json.disk_free_mb }}", "data_size", "MB", "measurement"),
    Entity("cpu_temperature", "sensor", N_("CPU temperature"), "{{ value_json.cpu_temperature_c }}", "temperature", "°C", "measurement"),
    Entity("last_scan", "sensor", N_("Last scan"), "{{ value_json.last_scan }}", "timestamp"),
    Entity("last_upload", "sensor", N_("Last upload"), "{{ value_json.last_upload }}", "timestamp"),
    Entity("heartbeat", "sensor", N_("Last heartbeat"), "{{ value_json.heartbeat }}", "timestamp"),
    Entity("uptime", "sensor", N_("Uptime"), "{{ value_json.uptime_seconds }}", "duration", "s"),
    Entity("version", "sensor", N_("Software version"), "{{ value_json.version }}", icon="mdi:package-variant"),
    Entity("token_present", "binary_sensor", N_("Signing token present"), _BOOLEAN_TEMPLATE.format(field="token_present"), "plug"),
    Entity("scanner_present", "binary_sensor", N_("Scanner present"), _BOOLEAN_TEMPLATE.format(field="scanner_present"), "plug"),
    Entity("archive_reachable", "binary_sensor", N_("Archive reachable"), _BOOLEAN_TEMPLATE.format(field="archive_reachable"), "connectivity"),
)
AVAILABILITY_KEY = "online"


def node_id(site: str, device: str) -> str:
    """Return the discovery node id of a box; Home Assistant allows only letters, digits, _ and -."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"sohoa_{site}_{device}")


def config_topic(prefix: str, component: str, node: str, key: str) -> str:
    return f"{prefix.rstrip('/')}/{component}/{node}/{key}/config"


def discovery_messages(
    homeassistant_prefix: str,
    site: str,
    device: str,
    *,
    state_topic: str,
    availability_topic: str,
    heartbeat_seconds: float,
) -> list[tuple[str, dict]]:
    """Return (topic, config) pairs for every entity of one box, in the current language.

    State sensors expire after three heartbeats without a state message, so a
    box that hangs while its connection stays up turns "unavailable".
    """
    node = node_id(site, device)
    device_info = {
        "identifiers": [node],
        "name": f"sohoa {site}/{device}",
        "manufacturer": "sohoa",
        "model": _("Digitization box"),
        "sw_version": __version__,
    }
    availability = {"availability_topic": availability_topic, "payload_available": "online", "payload_not_available": "offline"}
    messages = []
    for entity in ENTITIES:
        config = {
            "name": _(entity.name),
            "unique_id": f"{node}_{entity.key}",
            "object_id": f"{node}_{entity.key}",
            "state_topic": state_topic,
            "value_template": entity.value_template,
            "expire_after": int(3 * heartbeat_seconds),
            "device": device_info,
            **availability,
        }
        for field, value in (("device_class", entity.device_class), ("unit_of_measurement", entity.unit), ("state_class", entity.state_class), ("icon", entity.icon)):
            if value is not None:
                config[field] = value
        messages.append((config_topic(homeassistant_prefix, entity.component, node, entity.key), config))

    # The availability sensor reads the availability topic itself, so it has no availability of its own.
    messages.append(
        (
            config_topic(homeassistant_prefix, "binary_sensor", node, AVAILABILITY_KEY),
            {
                "name": _("Online"),
                "unique_id": f"{node}_{AVAILABILITY_KEY}",
                "object_id": f"{node}_{AVAILABILITY_KEY}",
                "state_topic": availability_topic,
                "payload_on": "online",
                "payload_off": "offline",
                "device_class": "connectivity",
                "device": device_info,
            },
        )
    )
    return messages
