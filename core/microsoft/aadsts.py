"""Microsoft sign-in errors (AADSTS codes) in plain words, each with what the admin should do.

The code is read from `error_description` ("AADSTS65001: The user or administrator has not
consented ..."); Microsoft's own text is shown under ours, escaped, for support tickets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODE = re.compile(r"\bAADSTS(\d{5,7})\b")


@dataclass(frozen=True)
class Explanation:
    code: str
    problem: str
    fix: str


_KNOWN: dict[str, tuple[str, str]] = {
    "65001": (
        "Nobody has granted this app the permissions it asks for in your tenant (consent not "
        "granted).",
        "Ask a Global Administrator to open the Entra admin center > Enterprise applications > "
        "this app > Permissions and click “Grant admin consent”, then click Authorize again.",
    ),
    "65004": (
        "The person signing in declined the permissions the app asks for.",
        "Click Authorize again and accept, or have a Global Administrator grant admin consent.",
    ),
    "90002": (
        "Microsoft does not know this tenant in the chosen cloud.",
        "Check the Tenant ID (Entra admin center > Overview) and the cloud on the Configuration "
        "tab, save, then click Authorize again.",
    ),
    "700016": (
        "The Application (client) ID is not registered in this tenant, or not consented there.",
        "Check the Application (client) ID against Entra > App registrations, and that the app "
        "lives in (or is consented in) this tenant; save, then Authorize again.",
    ),
    "50057": (
        "The account that signed in is disabled in Entra ID.",
        "Enable the service account (Entra admin center > Users > the account > "
        "Account enabled), then click Authorize again.",
    ),
    "7000215": (
        "The client secret is wrong.",
        "Copy the secret's Value (not its ID) from App registrations > Certificates & secrets, "
        "save it on the Configuration tab, then Authorize again.",
    ),
    "7000222": (
        "The client secret has expired.",
        "Create a new client secret in App registrations > Certificates & secrets, save it on "
        "the Configuration tab, then Authorize again.",
    ),
    "50126": (
        "The user name or password was wrong.",
        "Click Authorize again and sign in with the service account's current password.",
    ),
    "53003": (
        "A Conditional Access policy blocked the sign-in.",
        "Exclude the service account from network-location and sign-in-time restrictions, as "
        "Coconut's setup article requires, then Authorize again.",
    ),
    "50020": (
        "The account that signed in belongs to another tenant.",
        "Sign out of Microsoft (or use a private window) and sign in as the service account "
        "of this tenant.",
    ),
    "50011": (
        "The reply URL is not registered for this app.",
        "Add this service's callback URL (shown on the Configuration tab) as a Web redirect "
        "URI in App registrations > Authentication.",
    ),
}


def explain(error: str, description: str) -> Explanation:
    """Our words for a sign-in error; unknown codes still get Microsoft's code and a next step."""
    match = _CODE.search(description or "")
    code = match.group(1) if match else ""
    if code in _KNOWN:
        problem, fix = _KNOWN[code]
        return Explanation(f"AADSTS{code}", problem, fix)
    if error == "access_denied":
        return Explanation(
            error,
            "The sign-in was cancelled or refused at Microsoft.",
            "Click Authorize again and sign in as the service account.",
        )
    return Explanation(
        f"AADSTS{code}" if code else error or "unknown_error",
        "Microsoft refused the sign-in.",
        "Look the code up in Microsoft's AADSTS error list, fix what it names, then click "
        "Authorize again.",
    )
