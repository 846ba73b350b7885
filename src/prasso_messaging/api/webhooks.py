"""Twilio webhooks: delivery receipts and inbound SMS, both signed with `X-Twilio-Signature`.

The signature covers the public URL Twilio called (`APP_URL` + path) and the form fields; it is
checked with the `twilio` package's RequestValidator before anything is read or changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from prasso_messaging import inbound, receipts
from prasso_messaging.api.deps import MAX_ID, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.errors import ConfigError

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"], dependencies=[checked_input])

TWIML_TYPE = "application/xml"


async def signed_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    """The form fields of a request Twilio signed; 403 for anything else."""
    try:
        from twilio.request_validator import RequestValidator
    except ImportError as exc:
        raise ConfigError(
            "SMS_DRIVER: Twilio webhooks need `pip install 'prasso-messaging[twilio]'`"
        ) from exc
    settings = runtime.settings
    form = await request.form()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    url = settings.APP_URL + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    token = settings.TWILIO_AUTH_TOKEN
    if not token or not signature or not RequestValidator(token).validate(url, params, signature):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid Twilio signature")
    return params


SignedForm = Annotated[dict[str, str], Depends(signed_form)]


@router.post("/status", status_code=status.HTTP_204_NO_CONTENT)
async def status_callback(
    form: SignedForm,
    runtime: RuntimeDep,
    delivery: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    sid = form.get("MessageSid") or form.get("SmsSid")
    message_status = form.get("MessageStatus") or form.get("SmsStatus")
    if sid and message_status:
        if delivery is not None and message_status.lower() in receipts.FINAL_STATUSES:
            await receipts.wait_for_record(runtime.database, delivery_id=delivery)
        async with runtime.database.session() as session:
            await receipts.apply_status(
                session,
                receipts.StatusReport(
                    provider_message_id=sid,
                    status=message_status,
                    error_code=form.get("ErrorCode") or None,
                    to_number=form.get("To") or None,
                ),
            )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/inbound")
async def inbound_sms(form: SignedForm, runtime: RuntimeDep) -> Response:
    from twilio.twiml.messaging_response import MessagingResponse

    settings = runtime.settings
    reply = MessagingResponse()
    sender, recipient = form.get("From", ""), form.get("To", "")
    if sender and recipient:
        async with runtime.database.session() as session:
            result = await inbound.receive(
                session,
                sms=inbound.InboundSms(
                    from_number=sender,
                    to_number=recipient,
                    body=form.get("Body", ""),
                    provider_message_id=form.get("MessageSid") or form.get("SmsSid") or None,
                ),
                default_number=settings.TWILIO_PHONE_NUMBER,
                region=settings.MESSAGING_DEFAULT_REGION,
            )
        if result.reply:
            reply.message(result.reply)
    return Response(content=str(reply), media_type=TWIML_TYPE)
