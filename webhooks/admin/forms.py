"""The Configuration tab's form: every field checked, each with a message that says what to fix.

Plain WTForms (CSRF is checked for the whole app by CSRFProtect, not per form). The Graph
endpoint and the sign-in authority are not typed in: they follow from the cloud, are shown for
the admin to confirm, and a confirmation given for another cloud than the one submitted is
refused, so what is stored is what the admin saw.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.datastructures import MultiDict
from wtforms import (
    BooleanField,
    Form,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    ValidationError,
)
from wtforms.validators import AnyOf, InputRequired, Length, NumberRange

from core.connection import CLOUDS, SYNC_PAST_DAYS, Cloud, Connection, EditPolicy
from core.settings import Settings

GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
DOMAIN = re.compile(r"^(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# Emulator app ids need not be GUIDs; Entra's always are.
LOCAL_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MULTI_TENANT = {"common", "organizations", "consumers"}


def resolve_cloud(name: str, settings: Settings) -> Cloud:
    """The cloud's endpoints; EXSYNC_CLOUD_OVERRIDE_* points "worldwide" at an emulator."""
    cloud = CLOUDS[name]
    if name == "worldwide" and settings.cloud_override_graph_url:
        return Cloud(
            f"{cloud.label}, overridden by EXSYNC_CLOUD_OVERRIDE_*",
            settings.cloud_override_graph_url,
            settings.cloud_override_authority,
        )
    return cloud


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _tenant(form: Form, field: StringField) -> None:
    value = field.data or ""
    if value.lower() in MULTI_TENANT:
        raise ValidationError(
            f"{value!r} means any tenant; enter your organisation's own Tenant ID."
        )
    if not (GUID.match(value) or DOMAIN.match(value.lower())):
        raise ValidationError(
            "Enter a Tenant ID like 8c3f5a52-6b0e-4c1f-9a57-2f1d0c5e7b10, or a verified domain "
            "like contoso.onmicrosoft.com (Entra admin center > Overview)."
        )


def _email(form: Form, field: StringField) -> None:
    if not EMAIL.match(field.data or ""):
        raise ValidationError(
            "Enter the service account's email address, like exchange-sync@bank.example."
        )


def _printable(form: Form, field: StringField) -> None:
    if any(not ch.isprintable() for ch in field.data or ""):
        raise ValidationError("Use letters, digits, spaces and punctuation only.")


class DaysField(IntegerField):
    """A whole number of days; anything else gets the range's message, not a second one."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            self.data = int(valuelist[0]) if valuelist else None
        except ValueError:
            self.data = None


def _required_text(label: str, missing: str, *checks: Any, clean: Any = _strip) -> StringField:
    """A text field that must be filled in (`missing` says so), cleaned, then checked."""
    return StringField(label, filters=[clean], validators=[InputRequired(missing), *checks])


class ConfigurationForm(Form):
    tenant_id = _required_text("Tenant ID", "Enter your organisation's Tenant ID.", _tenant)
    cloud = SelectField(
        "Microsoft cloud",
        choices=[SelectChoice(name, cloud.label) for name, cloud in CLOUDS.items()],
        validate_choice=False,
        validators=[
            InputRequired("Choose the cloud your tenant lives in."),
            AnyOf(list(CLOUDS), "Choose one of the listed clouds."),
        ],
    )
    shown_cloud = HiddenField()
    confirm_endpoints = BooleanField("These endpoints are right for my organisation")
    display_name = _required_text(
        "Display Name",
        "Enter a Display Name (it titles the mailbox column on User Accounts).",
        Length(max=40, message="Keep the Display Name to 40 characters or fewer."),
        _printable,
    )
    client_id = _required_text(
        "Application (client) ID", "Enter the Application (client) ID of the Entra app."
    )
    client_secret = PasswordField("Client secret")
    impersonation = BooleanField("Configure Service Account for Impersonation")
    show_event_titles = BooleanField("Display Microsoft Exchange event title")
    service_account = _required_text(
        "Service account", "Enter the service account's email address.", _email, clean=_lower
    )
    sync_past_days = DaysField(
        "Days back",
        default=SYNC_PAST_DAYS,  # EXSYNC_SYNC_PAST_DAYS's default too: one window for both
        validators=[
            InputRequired("Enter how many past days to sync (0 to 365)."),
            NumberRange(0, 365, "Days back must be a whole number from 0 to 365."),
        ],
    )
    sync_future_days = DaysField(
        "Days ahead",
        validators=[
            InputRequired("Enter how many days ahead to sync (1 to 730)."),
            NumberRange(1, 730, "Days ahead must be a whole number from 1 to 730."),
        ],
    )
    edit_policy = RadioField(
        "When staff edit a synced appointment in Outlook",
        choices=[
            SelectChoice(EditPolicy.RESTORE.value, "Put it back as Coconut has it, and warn"),
            SelectChoice(EditPolicy.KEEP.value, "Keep their edit until Coconut changes it"),
        ],
        default=EditPolicy.RESTORE.value,
        validate_choice=False,
        validators=[
            InputRequired("Choose what to do when staff edit a synced appointment."),
            AnyOf([p.value for p in EditPolicy], "Choose one of the two listed options."),
        ],
    )

    def __init__(
        self, formdata: MultiDict[str, str] | None, settings: Settings, has_secret: bool, **kw: Any
    ) -> None:
        super().__init__(formdata, **kw)
        self.settings = settings
        self.has_secret = has_secret

    def endpoints_name(self) -> str:
        """The chosen cloud, or worldwide while the choice is invalid (it is reported)."""
        return self.cloud.data if self.cloud.data in CLOUDS else "worldwide"

    def endpoints(self) -> Cloud:
        return resolve_cloud(self.endpoints_name(), self.settings)

    def validate_client_id(self, field: StringField) -> None:
        value = field.data or ""
        if GUID.match(value):
            return
        emulated = self.cloud.data == "worldwide" and self.settings.cloud_override_graph_url
        if emulated and LOCAL_CLIENT_ID.match(value):
            return
        raise ValidationError(
            "The Application (client) ID is a GUID like 1f4c8c2e-0a7d-4d8e-9b3b-2a1e5c6d7f80 "
            "(Entra admin center > App registrations > your app > Overview)."
        )

    def validate_client_secret(self, field: PasswordField) -> None:
        value = field.data or ""
        if not value and not self.has_secret:
            raise ValidationError(
                "Enter the client secret (App registrations > Certificates & secrets); it is "
                "stored encrypted and never shown again."
            )
        if value and (len(value) > 1024 or value != value.strip()):
            raise ValidationError(
                "That does not look like a client secret: copy its Value (not its ID), "
                "without spaces."
            )

    def validate_confirm_endpoints(self, field: BooleanField) -> None:
        if self.cloud.data not in CLOUDS:
            return  # the cloud field says what is wrong
        if self.shown_cloud.data != self.cloud.data:
            raise ValidationError(
                "You chose another cloud: check the endpoints filled in for it below and "
                "confirm them."
            )
        if not field.data:
            raise ValidationError("Confirm the Graph endpoint and sign-in authority below.")

    def connection(self) -> Connection:
        """The validated form as the stored configuration (secrets kept apart)."""
        cloud = self.endpoints()
        return Connection(
            tenant_id=self.tenant_id.data or "",
            cloud=self.cloud.data or "worldwide",
            graph_url=cloud.graph_url,
            authority=cloud.authority,
            display_name=self.display_name.data or "",
            client_id=self.client_id.data or "",
            impersonation=bool(self.impersonation.data),
            show_event_titles=bool(self.show_event_titles.data),
            service_account=self.service_account.data or "",
            sync_past_days=int(self.sync_past_days.data or 0),
            sync_future_days=int(self.sync_future_days.data or 0),
            edit_policy=EditPolicy(self.edit_policy.data),
        )
