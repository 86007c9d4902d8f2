"""Hello Customer simulator: respondents in, answers, NPS and unsubscribes out.

Written from `hellocustomer.md` (V1.0 API) and the notes beside it:
- `Authorization: basic <token>` (default token "sandbox-token"); anything else is 401.
- One call per second per token: a call less than `min_interval` seconds after the previous
  call with the same token (answered or throttled) is 429, with `Retry-After: 1` unless
  `retry_after=False`. The simulator's clock is `time.monotonic` unless injected.
- `POST /V1.0/EN/campaign/{campaign}/respondent/addmultipletocache`: a JSON body
  (`Content-Type: application/json`, else 415) that is a non-empty array of respondent
  objects, each with a valid `email` and a `language_UniqueID` GUID from the documented
  table that the touchpoint offers (`languages`); `firstName`, `lastName`, `phoneNumber`,
  `custom_UniqueID` strings when given; `campaign_UniqueID` (if given) a GUID equal to the
  path's; `keyValues` an object of strings holding every `mandatory_keys` entry. The call
  is all or nothing: the first bad respondent (or one the sandbox was told to reject) makes
  it 400 with the documented validation message as `{"message": ...}`, and nothing is
  added. Success is 200 with an empty body (the document: "a response 200 ... the
  respondent was successfully added"). At most `max_respondents` a call (the real limit is
  not published).
- `GET .../answers/getall/{start}/{end}`: the responses answered in [start, end]
  (yyyyMMddHHmmss, fourteen digits, UTC, both inclusive); 400 when the dates are more than
  31 days apart.
  Answer and unsubscribe times are kept to the microsecond, as the API's own times are
  (the NPS answer's `"date":"2015-12-16T14:45:31.3778294+00:00"`), though the parameters
  are whole seconds: one answered at 12:00:00.5 is after a window ending 12:00:00.
- `POST .../analysis/nps/getnpsscore/{start}/{end}` with a filter array in a JSON body
  (`[]` = all, as NOTES.md says; an empty body is 400 "The JSON model is not correct"; each
  `{"key", "filterValues"}` keeps respondents whose keyValue `key` is one of the values):
  NPS over the NPS answers in that period, as documented.
- `GET .../respondent/unsubscribed/{start}/{end}` (assumed path and shape, the real ones are
  not published): `[{"uniqueID", "email", "custom_UniqueID", "respondent_UniqueID", "date"}]`
  (`date` ISO 8601 UTC, `respondent_UniqueID` null for an email never added) for the
  unsubscribes dated in [start, end], with the same 31-day window limit as `getall`.
- A touchpoint in `other_touchpoints` exists but is not on the token: 401 on every call
  ("5. Validation messages": "API token does not contain this touchpoint/CampaignUniqueID");
  any other touchpoint but `campaign` does not exist: 400 "Touchpoint with ID: {id} not
  found".
- `calls` (default: all) names the calls the token holds the permission for (`add_many`,
  `answers`, `nps`, `unsubscribed`): any other is 401 ("API token does not contain the
  right API call permissions").
- Errors are JSON `{"message": ...}`: 401 "Authorization has been denied for this
  request.", 400 with the document's validation messages, 429 when throttled.

Added respondents get, deterministically from `seed`, a response (fraction `response_rate`,
answered at the time they were added) and an unsubscribe (fraction `unsubscribe_rate`).
Tests seed more with `add_responses` and change one with `edit_response`.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response

LANGUAGES = {
    "1B5C1275-4F92-422F-B1FC-799BF8E30598": "Dutch",
    "901AF5BC-06CB-4DE0-B523-135ECFDC882A": "French",
    "DF88D743-1B99-44EF-B47F-260C78030EE7": "English",
    "B913ECA5-638C-4B5C-80FD-4BC9E3B29587": "German",
    "3D74560A-9AED-420C-99B8-B6BA8BB92202": "Italian",
    "EB89AF5E-C996-47DB-AB22-60AA13A2DBF8": "Spanish",
    "D9E0CFDF-034A-4D43-92F9-6AB246A9AA37": "Czech",
    "EFCA8E5D-9394-4A19-B805-F6E41AF76921": "Danish",
    "90B0555C-F6B0-47F3-A68D-D3A1498D9C09": "Estonian",
    "5D82F48C-A6CE-400D-971D-85C2C8677665": "Irish",
    "0B086FBC-CFD5-4284-8800-1959D2ECB5EA": "Croatian",
    "98CF0FB8-234B-49B2-8A6C-23B99B154D52": "Latvian",
    "E5366029-C68F-4F8D-93DF-33B9439F9216": "Lithuanian",
    "CABFA802-7BB1-46C0-8ACD-2EE75C11C249": "Hungarian",
    "D917F99B-D6B7-418C-BC35-77FBA939BBD7": "Malti",
    "3AF8680C-3F2B-40F7-8ED3-2783B993CD86": "Norsk",
    "0C801A28-7504-4B54-AA8E-3B327A5191B0": "Polish",
    "D949E8C8-5E9E-421D-8103-6AA45083578D": "Portuguese",
    "73EE0C78-C21E-4C0E-97FB-3039B0D0877A": "Romanian",
    "55C30D14-3ACF-4828-8F95-30B0DC2318B6": "Slovac",
    "FB5A68D1-23EB-46D3-B266-F364D2BA56ED": "Slovenian",
    "A6F3B85B-817D-484F-88CC-2F5249293525": "Finnish",
    "F7818F3A-7481-4B3D-BB53-2C4EFF8B5B66": "Swedish",
    "B2C03D11-701B-486C-88C0-E019A8461823": "Turkish",
    "80CEBA7C-77AE-4A08-ABE9-B9C5CD3F9084": "Greek",
    "28526D05-EAF5-4869-9E46-1423921A7CCF": "Bulgarian",
    "9B576FE6-BA6D-40F4-B779-0101D8B79F7D": "Russian",
    "C11106F9-E9B0-4AF3-BFE8-EF1497A9FFD0": "Chinese",
    "C9B76975-23A0-4277-BD0F-EBE02FA3A314": "Arabic",
}
ENGLISH = "DF88D743-1B99-44EF-B47F-260C78030EE7"
GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STAMP = "%Y%m%d%H%M%S"
STAMP_DIGITS = re.compile(r"[0-9]{14}")  # "3. Date format": 15/12/2018 3pm is 20181215150000
MAX_WINDOW = timedelta(days=31)
PREFIX = "/V1.0/<culture>/campaign/<campaign>"
# the generated survey: (key, text, kind)
QUESTIONS = (
    ("nps", "How likely are you to recommend $_CompanyName_$ to a friend?", "nps"),
    ("ces", "$_CompanyName_$ made it easy to handle my request.", "ces"),
    ("why", "What is the main reason for your score?", "text"),
)
REASONS = (
    ("Friendly and quick staff", "Positive", "Personnel>Friendliness"),
    ("Waited too long at the counter", "Negative", "Service>Waiting time"),
    ("The product broke after a week", "Negative", "Product>Quality"),
    ("Good prices", "Positive", "Price>Value for money"),
)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(message: str, status: int = 400) -> Response:
    return json_response({"message": message}, status)


# how often each NPS score 0..10 is given: skewed to 7-10, as real touchpoints are
NPS_WEIGHTS = (2, 1, 1, 2, 2, 4, 5, 10, 16, 20, 17)


class HelloCustomerSim(Simulator):
    name = "hellocustomer"
    rules: ClassVar[list[Rule]] = [
        Rule(f"{PREFIX}/respondent/addmultipletocache", methods=["POST"], endpoint="add_many"),
        Rule(f"{PREFIX}/answers/getall/<start>/<end>", methods=["GET"], endpoint="answers"),
        Rule(f"{PREFIX}/analysis/nps/getnpsscore/<start>/<end>", methods=["POST"], endpoint="nps"),
        Rule(
            f"{PREFIX}/respondent/unsubscribed/<start>/<end>",
            methods=["GET"],
            endpoint="unsubscribed",
        ),
    ]

    def __init__(
        self,
        *,
        token: str = "sandbox-token",
        campaign: str = "c8dc5f94-a9e8-4743-8744-e66a73a7e724",
        other_touchpoints: Iterable[str] = (),
        calls: Iterable[str] | None = None,
        languages: Iterable[str] = tuple(LANGUAGES),
        mandatory_keys: Iterable[str] = (),
        min_interval: float = 1.0,
        retry_after: bool = True,
        max_respondents: int = 1000,
        response_rate: float = 0.3,
        unsubscribe_rate: float = 0.05,
        seed: int = 7,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(clock=clock)
        self.token = token
        self.campaign = campaign.lower()
        self.other_touchpoints = {t.lower() for t in other_touchpoints}
        self.calls = None if calls is None else set(calls)  # None: the token may make all
        self.languages = {g.upper() for g in languages}
        self.mandatory_keys = tuple(mandatory_keys)
        self.min_interval = min_interval
        self.retry_after = retry_after
        self.max_respondents = max_respondents
        self.response_rate = response_rate
        self.unsubscribe_rate = unsubscribe_rate
        self.seed = seed
        self.now = now
        self.reset_state()

    def reset_state(self) -> None:
        self._respondents: list[dict[str, Any]] = []
        self._by_email: dict[str, int] = {}  # email -> index of its latest add
        self._by_key: dict[str, list[int]] = {}  # custom_UniqueID -> indexes of its adds
        self._responses: dict[str, dict[str, Any]] = {}
        self._answered: list[tuple[datetime, str]] = []  # sorted (answered at, response id)
        self._unsubscribes: dict[str, dict[str, Any]] = {}  # email -> record
        self._unsubscribed: list[tuple[datetime, str]] = []  # sorted (unsubscribed at, email)
        self._last_call: dict[str, float] = {}
        self._surveys: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.throttled = 0

    # --- what tests and the demo read -------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "respondents": len(self._respondents),
                "responses": len(self._responses),
                "unsubscribed": len(self._unsubscribes),
                "throttled": self.throttled,
            }

    def respondents(self) -> list[dict[str, Any]]:
        """Every respondent added, in order (a contact added twice appears twice)."""
        with self.lock:
            return [dict(r) for r in self._respondents]

    def by_key(self) -> dict[str, list[dict[str, Any]]]:
        """custom_UniqueID → every respondent added with it, in order."""
        with self.lock:
            return {k: [dict(self._respondents[i]) for i in ix] for k, ix in self._by_key.items()}

    def answered(self, until: datetime | None = None) -> int:
        """How many responses there are; with `until`, how many were answered at or before
        it (to the microsecond, as the sandbox keeps them)."""
        with self.lock:
            if until is None:
                return len(self._responses)
            return bisect.bisect_right(self._answered, (until.astimezone(UTC), "\uffff"))

    def response(self, response_id: str) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self._responses[response_id]))  # type: ignore[no-any-return]

    def add_responses(
        self,
        n: int,
        start: datetime,
        end: datetime,
        *,
        key_values: Callable[[int], Mapping[str, str]] | None = None,
    ) -> list[str]:
        """Seed `n` responses answered evenly over [start, end] by new respondents; their ids.

        `key_values(i)` gives respondent i's keyValues (default: a store out of three).
        """
        ids = []
        span = (end - start) / max(n - 1, 1)
        with self.lock:
            base = len(self._respondents)
            for i in range(n):
                values = key_values(i) if key_values else {"Store": f"Store {i % 3 + 1}"}
                at = start + span * i
                respondent = self._store_respondent(
                    {
                        "firstName": f"Seeded{base + i}",
                        "lastName": "Respondent",
                        "email": f"seeded.{base + i}@example.com",
                        "custom_UniqueID": f"SEED-{base + i:06d}",
                        "language_UniqueID": ENGLISH.lower(),
                        "campaign_UniqueID": self.campaign,
                        "keyValues": dict(values),
                    },
                    at,
                )
                rng = random.Random(f"{self.seed}:{base + i}")
                ids.append(self._respond(respondent, rng, at))
        return ids

    def edit_response(
        self, response_id: str, *, score: int | None = None, text: str | None = None
    ) -> None:
        """Change a response's NPS score and/or its text answer (its answer date stays)."""
        with self.lock:
            for answer in self._responses[response_id]["answerQuestions"]:
                if score is not None and answer["question_HasNpsValueAnswer"]:
                    answer["answer_Value"] = score
                if text is not None and answer["question_HasTextAnswer"]:
                    answer["answer_Text"] = text

    def unsubscribes(self) -> list[dict[str, Any]]:
        """Every unsubscribe held, as the unsubscribed list answers it."""
        with self.lock:
            return [dict(u) for u in self._unsubscribes.values()]

    def unsubscribe(self, email: str, at: datetime | None = None) -> None:
        """Record that this email unsubscribed (at `at`, default now)."""
        with self.lock:
            self._unsubscribe(email.lower(), at or self.now())

    # --- request guard ----------------------------------------------------------------
    def _guard(self, request: Request, campaign: str, call: str) -> Response | None:
        """401 without the token, 429 within `min_interval` of the previous call, 401 for a
        touchpoint of the account the token does not hold, 400 for one that does not exist;
        None when the call may proceed."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic" or token.strip() != self.token:
            return _error("Authorization has been denied for this request.", 401)
        if self.calls is not None and call not in self.calls:  # not the call's permission
            return _error("Authorization has been denied for this request.", 401)
        with self.lock:
            now = self.clock()
            last = self._last_call.get(token)
            self._last_call[token] = now
            if last is not None and now - last < self.min_interval:
                self.throttled += 1
                headers = {"Retry-After": "1"} if self.retry_after else None
                return json_response(
                    {"message": "Too many requests: at most 1 call per second"}, 429, headers
                )
        if campaign.lower() in self.other_touchpoints:  # "does not contain this touchpoint"
            return _error("Authorization has been denied for this request.", 401)
        if campaign.lower() != self.campaign:
            return _error(f"Touchpoint with ID: {campaign} not found")
        return None

    def _window(self, start: str, end: str, limit: bool) -> tuple[datetime, datetime] | Response:
        """The [start, end] a pull asks for, as whole seconds (UTC): a time stored with a
        fraction after `end` (12:00:00.5 after 12:00:00) is outside it."""
        try:
            if not (STAMP_DIGITS.fullmatch(start) and STAMP_DIGITS.fullmatch(end)):
                raise ValueError(start, end)  # strptime alone reads "202611 1000000"
            first = datetime.strptime(start, STAMP).replace(tzinfo=UTC)
            last = datetime.strptime(end, STAMP).replace(tzinfo=UTC)
        except ValueError:
            return _error("The dates must be formatted as yyyyMMddHHmmss")
        if last < first:
            return _error("The end date is before the start date")
        if limit and last - first > MAX_WINDOW:
            return _error("The start date and end date cannot be more than 31 days apart")
        return first, last

    # --- the API ----------------------------------------------------------------------
    def add_many(self, request: Request, culture: str, campaign: str) -> Response:
        refused = self._guard(request, campaign, "add_many")
        if refused is not None:
            return refused
        if request.mimetype != "application/json":
            return _error(
                f"The request entity's media type '{request.mimetype}' is not supported", 415
            )
        body = request.get_json(silent=True)
        if not isinstance(body, list) or not body:
            return _error("The JSON model is not correct")
        if len(body) > self.max_respondents:
            return _error(f"At most {self.max_respondents} respondents a call")
        for item in body:
            problem = self._invalid(item, campaign)
            if problem:
                return _error(problem)
        with self.lock:
            now = self.now()
            for item in body:
                respondent = self._store_respondent(item, now)
                rng = random.Random(f"{self.seed}:{respondent['index']}")
                if rng.random() < self.response_rate:
                    self._respond(respondent, rng, now)
                if rng.random() < self.unsubscribe_rate:
                    self._unsubscribe(respondent["email"], now)
        return Response("", 200)

    def _invalid(self, item: Any, campaign: str) -> str | None:
        if not isinstance(item, dict):
            return "The model of the respondent is invalid"
        for name in ("firstName", "lastName", "phoneNumber", "custom_UniqueID"):
            if item.get(name) is not None and not isinstance(item[name], str):
                return f"The model of the respondent is invalid: {name} must be a string"
        email = item.get("email")
        if not isinstance(email, str) or not EMAIL.match(email):
            return f"The respondent email {email} is invalid"
        language = item.get("language_UniqueID")
        if not isinstance(language, str) or not language:
            return "The Guid of the language is empty or the format is incorrect"
        if not GUID.match(language):
            return "The format of the Guid of the language is not valid"
        if language.upper() not in LANGUAGES:
            return f"Language with ID: {language} not found"
        if language.upper() not in self.languages:
            return "The LanguageUniqueId is not part of this touchpoint"
        touchpoint = item.get("campaign_UniqueID")
        if touchpoint is not None and not (isinstance(touchpoint, str) and GUID.match(touchpoint)):
            return "The model of the respondent is invalid: campaign_UniqueID must be a GUID"
        if touchpoint is not None and touchpoint.lower() != campaign.lower():
            return f"Touchpoint with ID: {touchpoint} not found"
        values = item.get("keyValues") or {}
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            return "The model of the respondent is invalid: keyValues must map text to text"
        for key in self.mandatory_keys:
            if not values.get(key):
                return f"The model of the respondent is invalid: key value {key!r} is mandatory"
        reason = self.faults.rejection(email, item.get("custom_UniqueID"))
        if reason:
            return f"The respondent email {email} is invalid: {reason}"
        return None

    def _store_respondent(self, item: dict[str, Any], at: datetime) -> dict[str, Any]:
        index = len(self._respondents)
        email = str(item["email"]).lower()
        key = str(item.get("custom_UniqueID") or "")
        respondent = {
            "index": index,
            "uniqueID": str(uuid.UUID(int=random.Random(f"{self.seed}/r{index}").getrandbits(128))),
            "firstName": item.get("firstName") or "",
            "lastName": item.get("lastName") or "",
            "email": email,
            "phoneNumber": item.get("phoneNumber") or "",
            "custom_UniqueID": key,
            "language_UniqueID": str(item["language_UniqueID"]).lower(),
            "campaign_UniqueID": self.campaign,
            "keyValues": dict(item.get("keyValues") or {}),
            "added": _iso(at),
        }
        self._respondents.append(respondent)
        self._by_email[email] = index
        if key:
            self._by_key.setdefault(key, []).append(index)
        return respondent

    def _survey(self, language: str) -> tuple[str, list[dict[str, Any]]]:
        """The survey in one language: its id and its questions (ids differ per language)."""
        if language not in self._surveys:
            survey = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.campaign}/survey/{language}"))
            questions = [
                {
                    "survey_UniqueID": survey,
                    "question_UniqueID": str(
                        uuid.uuid5(uuid.NAMESPACE_URL, f"{self.campaign}/{key}/{language}")
                    ),
                    "question_SiblingUniqueID": str(
                        uuid.uuid5(uuid.NAMESPACE_URL, f"{self.campaign}/{key}")
                    ),
                    "question_Text": text,
                    "question_SortOrder": order,
                    "question_HasScoreAnswer": kind in ("nps", "ces"),
                    "question_HasNpsValueAnswer": kind == "nps",
                    "question_HasTextAnswer": kind == "text",
                    "question_HasBooleanAnswer": False,
                    "question_HasCesScoreAnswer": kind == "ces",
                    "question_HasCsatScoreAnswer": False,
                    "question_HasMultipleChoiceAnswer": False,
                }
                for order, (key, text, kind) in enumerate(QUESTIONS, start=1)
            ]
            self._surveys[language] = (survey, questions)
        return self._surveys[language]

    def _respond(self, respondent: dict[str, Any], rng: random.Random, when: datetime) -> str:
        """Answer the survey for this respondent, at `when`, the time it was added: shown to
        the second, as the document's dates are, but kept to the microsecond, as the API's
        own times are ("date":"2015-12-16T14:45:31.3778294+00:00"), so a pull's windows
        must leave no fraction of a second between them."""
        at = respondent["added"]
        language = respondent["language_UniqueID"]
        survey, questions = self._survey(language)
        reason = REASONS[rng.randrange(len(REASONS))]
        answers = []
        for question, (_key, _text, kind) in zip(questions, QUESTIONS, strict=True):
            answer: dict[str, Any] = {"answer_Date": at}
            if kind == "nps":
                answer["answer_Value"] = rng.choices(range(11), NPS_WEIGHTS)[0]
            elif kind == "ces":
                answer["answer_Value"] = rng.randint(1, 7)
            else:
                answer["answer_Text"] = reason[0]
            answer.update(question)
            answer["uniqueID"] = str(uuid.UUID(int=rng.getrandbits(128)))
            if kind == "text":
                answer["prediction"] = {
                    "items": [{"polarity": reason[1], "paths": [{"order": 0, "path": reason[2]}]}]
                }
            answers.append(answer)
        response_id = str(uuid.UUID(int=rng.getrandbits(128)))
        self._responses[response_id] = {
            "firstName": respondent["firstName"],
            "lastName": respondent["lastName"],
            "privateIp": "10.0.0.1",
            "publicIp": "192.0.2.10:50000",
            "email": respondent["email"],
            "phoneNumber": respondent["phoneNumber"],
            "campaign_UniqueID": self.campaign,
            "language_UniqueID": language,
            "respondent_UniqueID": respondent["uniqueID"],
            "survey_UniqueID": survey,
            "hasBeenContacted": False,
            "hasBeenForwarded": False,
            "dateSurveyed": at,
            "dateAnswer": at,
            "custom_UniqueID": respondent["custom_UniqueID"],
            "keyValues": dict(respondent["keyValues"]),
            "answerQuestions": answers,
            "answerTags": [],
            "forwardedMessages": [],
            "repliedMessages": [],
            "notes": [],
            "hasBeenDisabledForReview": False,
            "uniqueID": response_id,
        }
        bisect.insort(self._answered, (when.astimezone(UTC), response_id))
        return response_id

    def _unsubscribe(self, email: str, at: datetime) -> None:
        if email in self._unsubscribes:
            return
        index = self._by_email.get(email)
        held = self._respondents[index] if index is not None else {}
        self._unsubscribes[email] = {
            "uniqueID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.campaign}/unsub/{email}")),
            "email": email,
            "custom_UniqueID": held.get("custom_UniqueID", ""),
            "respondent_UniqueID": held.get("uniqueID"),
            "date": _iso(at),
        }
        bisect.insort(self._unsubscribed, (at.astimezone(UTC), email))

    def _guarded_window(
        self, request: Request, campaign: str, start: str, end: str, *, limit: bool, call: str
    ) -> tuple[datetime, datetime] | Response:
        """The pull endpoints' common checks: token and campaign, then the date window."""
        refused = self._guard(request, campaign, call)
        return refused if refused is not None else self._window(start, end, limit=limit)

    def _between(
        self, timeline: list[tuple[datetime, str]], start: datetime, end: datetime
    ) -> list[str]:
        lo = bisect.bisect_left(timeline, (start, ""))
        hi = bisect.bisect_right(timeline, (end, "\uffff"))
        return [item for _when, item in timeline[lo:hi]]

    def answers(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        window = self._guarded_window(request, campaign, start, end, limit=True, call="answers")
        if isinstance(window, Response):
            return window
        with self.lock:
            found = [self._responses[r] for r in self._between(self._answered, *window)]
            return json_response(found)

    def nps(self, request: Request, culture: str, campaign: str, start: str, end: str) -> Response:
        window = self._guarded_window(request, campaign, start, end, limit=False, call="nps")
        if isinstance(window, Response):
            return window
        filters = request.get_json(silent=True)  # a JSON array, `[]` for all: no body is not
        if not isinstance(filters, list) or not all(
            isinstance(f, dict)
            and isinstance(f.get("key"), str)
            and isinstance(f.get("filterValues"), list)
            and all(isinstance(v, str) for v in f["filterValues"])
            for f in filters
        ):
            return _error("The JSON model is not correct")
        with self.lock:
            scores = []
            for response_id in self._between(self._answered, *window):
                response = self._responses[response_id]
                values = response["keyValues"]
                if all(values.get(f["key"]) in f["filterValues"] for f in filters):
                    scores += [
                        a["answer_Value"]
                        for a in response["answerQuestions"]
                        if a["question_HasNpsValueAnswer"] and a.get("answer_Value") is not None
                    ]
        detractors = promoters = passive = 0.0
        if scores:
            detractors = round(100 * sum(s <= 6 for s in scores) / len(scores), 2)
            promoters = round(100 * sum(s >= 9 for s in scores) / len(scores), 2)
            passive = round(100 - detractors - promoters, 2)
        when = self.now()
        return json_response(
            {
                "nps": int(promoters - detractors),
                "detractors": detractors,
                "passive": passive,
                "promoters": promoters,
                "date": when.astimezone(UTC).isoformat(),
                "uniqueID": str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{campaign}/nps/{start}/{end}/{filters}")
                ),
            }
        )

    def unsubscribed(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        window = self._guarded_window(
            request, campaign, start, end, limit=True, call="unsubscribed"
        )
        if isinstance(window, Response):
            return window
        with self.lock:
            return json_response(
                [self._unsubscribes[e] for e in self._between(self._unsubscribed, *window)]
            )
