"""SMS provider webhooks: delivery receipts and inbound SMS, from Twilio and from Vonage (the
failover provider), each checked against its provider's signature before anything is read.
Twilio's also carry WhatsApp (`whatsapp:`-prefixed From and To): its receipts and inbound messages.

Twilio signs with `X-Twilio-Signature` over the public URL it called (`APP_URL` + path) and the
form fields, checked with the `twilio` package's RequestValidator. Vonage calls with GET query
parameters or a POST form or JSON body (as set in its dashboard) whose `sig` is checked against
VONAGE_SIGNATURE_SECRET (`providers/vonage.py`); without the secret its webhooks answer 403.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from prasso_messaging import inbound, receipts
from prasso_messaging.api.deps import MAX_ID, RuntimeDep
from prasso_messaging.api.input_rules import checked_input, refuse, unstorable
from prasso_messaging.channels.sms import SmsChannel
from prasso_messaging.errors import ConfigError, SendError
from prasso_messaging.providers.base import Sms
from prasso_messaging.providers.failover import FailoverSms
from prasso_messaging.providers.twilio import PREFIX as WHATSAPP_PREFIX
from prasso_messaging.providers.vonage import VonageSms, signature_valid
from prasso_messaging.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[checked_input])

TWIML_TYPE = "application/xml"


# --- Twilio --------------------------------------------------------------------------------------


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


@router.post("/twilio/status", status_code=status.HTTP_204_NO_CONTENT)
async def status_callback(
    form: SignedForm,
    runtime: RuntimeDep,
    delivery: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """Twilio's status callback for an SMS or WhatsApp message (signature checked): moves the
    delivery to `delivered` or `failed`, never backwards."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    message_status = form.get("MessageStatus") or form.get("SmsStatus")
    if sid and message_status:
        await _apply_receipt(
            runtime,
            delivery,
            receipts.StatusReport(
                provider_message_id=sid,
                status=message_status,
                error_code=form.get("ErrorCode") or None,
                to_number=form.get("To") or None,
            ),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/twilio/inbound")
async def inbound_sms(form: SignedForm, runtime: RuntimeDep) -> Response:
    """An SMS or WhatsApp message to one of our numbers (signature checked): stored, and its
    keywords (STOP, START, HELP, ...) applied; answers TwiML with the keyword's reply."""
    from twilio.twiml.messaging_response import MessagingResponse

    settings = runtime.settings
    reply = MessagingResponse()
    sender, recipient = form.get("From", ""), form.get("To", "")
    if sender and recipient:
        message = inbound.InboundSms(
            from_number=sender,
            to_number=recipient,
            body=form.get("Body", ""),
            provider_message_id=form.get("MessageSid") or form.get("SmsSid") or None,
        )
        region = settings.MESSAGING_DEFAULT_REGION
        async with runtime.database.session() as session:
            if sender.startswith(WHATSAPP_PREFIX):  # WhatsApp arrives on the same webhook
                result = await inbound.receive_whatsapp(session, message=message, region=region)
            else:
                result = await inbound.receive(
                    session,
                    sms=message,
                    default_number=settings.TWILIO_PHONE_NUMBER,
                    region=region,
                )
        if result.reply:
            reply.message(result.reply)
    return Response(content=str(reply), media_type=TWIML_TYPE)


# --- Vonage --------------------------------------------------------------------------------------


async def signed_vonage_params(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    """The parameters of a request Vonage signed (query, form or JSON body); 403 otherwise."""
    params = dict(request.query_params)
    if request.method == "POST":
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                document = await request.json()
            except ValueError:
                raise refuse("body", "body", "must be a JSON object") from None
            if not isinstance(document, dict):
                raise refuse("body", "body", "must be a JSON object")
            for name, value in document.items():
                if isinstance(value, bool):
                    params[name] = "true" if value else "false"
                elif isinstance(value, str | int | float):
                    params[name] = str(value)
                    problem = unstorable(value)
                    if problem is not None:
                        raise refuse("body", name, problem)
        else:
            form = await request.form()
            params.update((k, v) for k, v in form.items() if isinstance(v, str))
    settings = runtime.settings
    secret, method = settings.VONAGE_SIGNATURE_SECRET, settings.VONAGE_SIGNATURE_METHOD
    if not signature_valid(params, secret, method, now=time.time()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid Vonage signature")
    return params


VonageParams = Annotated[dict[str, str], Depends(signed_vonage_params)]


def _e164(number: str) -> str:
    """Vonage writes numbers as digits without the `+`."""
    return f"+{number}" if number.isdigit() else number


@router.get("/vonage/status", status_code=status.HTTP_204_NO_CONTENT)
@router.post("/vonage/status", status_code=status.HTTP_204_NO_CONTENT)
async def vonage_status(params: VonageParams, runtime: RuntimeDep) -> Response:
    """A delivery receipt of the SMS API (`messageId`, `status`, `err-code`, `client-ref`)."""
    message_id, state = params.get("messageId"), params.get("status")
    if message_id and state:
        reference = params.get("client-ref", "")
        delivery = int(reference) if reference.isdigit() and int(reference) <= MAX_ID else None
        await _apply_receipt(
            runtime,
            delivery,
            receipts.StatusReport(
                provider_message_id=message_id,
                status=state,
                error_code=params.get("err-code") or None,
                to_number=_e164(params["msisdn"]) if params.get("msisdn") else None,
                provider="vonage",
            ),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/vonage/inbound", status_code=status.HTTP_204_NO_CONTENT)
@router.post("/vonage/inbound", status_code=status.HTTP_204_NO_CONTENT)
async def vonage_inbound(params: VonageParams, runtime: RuntimeDep) -> Response:
    """An inbound SMS to the Vonage number (`msisdn`, `to`, `text`, `messageId`); a keyword's
    answer goes back as an SMS from that number (Vonage has no reply in the response)."""
    settings = runtime.settings
    sender, recipient = params.get("msisdn", ""), params.get("to", "")
    if not (sender and recipient):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    async with runtime.database.session() as session:
        result = await inbound.receive(
            session,
            sms=inbound.InboundSms(
                from_number=_e164(sender),
                to_number=_e164(recipient),
                body=params.get("text", ""),
                provider_message_id=params.get("messageId") or None,
            ),
            default_number=settings.TWILIO_PHONE_NUMBER,
            region=settings.MESSAGING_DEFAULT_REGION,
            shared_number=settings.VONAGE_PHONE_NUMBER,
        )
    vonage = _vonage(runtime)
    if result.reply and vonage is not None:
        reply = Sms(to=_e164(sender), from_number=_e164(recipient), body=result.reply)
        try:
            await vonage.send(reply, from_number=_e164(recipient))
        except SendError as exc:  # the keyword is applied; only its confirmation is lost
            log.warning("vonage: could not send the %s reply: %s", result.keyword, exc)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _vonage(runtime: Runtime) -> VonageSms | None:
    """The Vonage provider of the SMS channel's failover pair, if there is one."""
    channel = runtime.channels.get("sms")
    provider = channel.provider if isinstance(channel, SmsChannel) else None
    if isinstance(provider, FailoverSms) and isinstance(provider.secondary, VonageSms):
        return provider.secondary
    return None


async def _apply_receipt(
    runtime: Runtime, delivery: int | None, report: receipts.StatusReport
) -> None:
    if delivery is not None and report.status.lower() in receipts.FINAL_STATUSES:
        await receipts.wait_for_record(runtime.database, delivery_id=delivery)
    async with runtime.database.session() as session:
        await receipts.apply_status(session, report)
