"""Datameer routes about the server itself: licence details, product id, empty collections.

See docs/datameer-routes.md for every Datameer route and what Datamill answers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from datamill.api.types import CurrentUser
from datamill.api.wire import Clock, PrettyJSONResponse
from datamill.services.jobs import JobService
from datamill.services.system import licence_facts, product_id

router = APIRouter()

# An open-source licence never expires; Datameer's date format has no word for
# "never", so the latest date it can say stands for it.
NEVER_EXPIRES = "Dec 31, 9999 11:59:59 PM"
UNLIMITED = -1


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


@router.get("/rest/license-details")
def license_details(request: Request, user: CurrentUser) -> Response:
    """Datameer's licence document with Datamill's honest values (ADMIN only)."""
    facts = licence_facts(_service(request).store, user)
    clock: Clock = request.app.state.clock
    return PrettyJSONResponse(
        {
            "ProductId": facts.product_id,
            "ProductVersion": facts.version,
            "LicenseHolder": "Datamill open-source installation",
            "LicenseType": f"Open Source ({facts.licence})",
            "LicenseStartDate": clock.datameer(facts.installed_at),
            "LicenseExpirationDate": NEVER_EXPIRES,
            "LicenseVolumePeriodInMonths": 1,
            "LicenseVolumelimitInBytes": UNLIMITED,
            "TotalVolumeConsumedInBytes": facts.bytes_imported,
            # Datamill's own member: where the current volume period (a calendar month, UTC) began.
            "LicenseVolumePeriodStartDate": clock.datameer(facts.period_start),
        }
    )


@router.get("/license/product-id")
def license_product_id(request: Request, _user: CurrentUser) -> Response:
    """This installation's product id as plain text, without a line end (scripts paste it)."""
    return PlainTextResponse(product_id(_service(request).store))


@router.get("/rest/dashboard")
@router.get("/rest/infographics")
def no_such_artifacts(_user: CurrentUser) -> Response:
    """Datamill has no dashboards or infographics: an empty list, as for a server without any."""
    return PrettyJSONResponse([])
