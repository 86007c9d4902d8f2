# ruff: noqa: W293  (the examples are kept byte for byte, their blank lines indented)
"""The vendors' own example answers, copied verbatim from their documents (the project
never reads /work/shared at run or test time). Each names its source file and section."""

from __future__ import annotations

# hellocustomer.md, "9. API-Call 3 - Get responses": "The response of the GET envelope is a
# JSON object:" (GET .../answers/getall/{startDate}/{endDate})
HELLOCUSTOMER_GETALL = r"""[
   {
      "firstName":"John",
      "lastName":"Doe",
      "privateIp":"84.198.158.58",
      "publicIp":"84.198.158.58:58554",
      "email":"john.doe@gmail.com",
      "phoneNumber":"0491623685",
      "campaign_UniqueID":"1e82dea5-f254-4735-ba06-cfcccc756828",
      "language_UniqueID":"1b5c1275-4f92-422f-b1fc-799bf8e30598",
      "respondent_UniqueID":"0670a979-bd0e-4f0b-a919-13a385dec322",
      "survey_UniqueID":"535503b5-960a-4178-8ac5-d89a886b8085",
      "hasBeenContacted":false,
      "hasBeenForwarded":false,
      "dateSurveyed":"2020-09-29T13:36:25Z",
      "dateAnswer":"2020-09-29T13:42:37Z",
      "custom_UniqueID":"",
      "keyValues":{
         
      },
      "answerQuestions":[
         {
            "answer_Date":"2020-09-29T13:42:37Z",
            "answer_Value":6,
            "survey_UniqueID":"535503b5-960a-4178-8ac5-d89a886b8085",
            "question_UniqueID":"9895902c-5138-4feb-9af9-d38093b7f54e",
            "question_SiblingUniqueID":"1f6cb28d-a553-4acc-beca-0b69d9a4ddd0",
            "question_Text":"In welke mate ben je het eens of oneens met volgende stelling:\n$_CompanyName_$ zorgde ervoor dat mijn probleem makkelijk behandeld kon worden.",
            "question_SortOrder":1,
            "question_HasScoreAnswer":true,
            "question_HasNpsValueAnswer":false,
            "question_HasTextAnswer":false,
            "question_HasBooleanAnswer":false,
            "question_HasCesScoreAnswer":true,
            "question_HasCsatScoreAnswer":false,
            "question_HasMultipleChoiceAnswer":false,
            "uniqueID":"64b41b3e-256c-4e70-a6bf-6a0b5786f8ba"
         },
         {
            "answer_Text":"Het is heel vriendelijk personeel",
            "answer_Date":"2020-09-29T13:42:37Z",
            "survey_UniqueID":"535503b5-960a-4178-8ac5-d89a886b8085",
            "question_UniqueID":"eb33bd3a-6eb0-4c9a-9121-08aee26851de",
            "question_SiblingUniqueID":"224dc951-3a62-4760-aa62-327d263b8261",
            "question_Text":"<has yet to be completed>",
            "question_SortOrder":2,
            "question_HasScoreAnswer":false,
            "question_HasNpsValueAnswer":false,
            "question_HasTextAnswer":true,
            "question_HasBooleanAnswer":false,
            "question_HasCesScoreAnswer":false,
            "question_HasCsatScoreAnswer":false,
            "question_HasMultipleChoiceAnswer":false,
            "prediction":{
               "items":[
                  {
                     "polarity":"Positive",
                     "paths":[
                        {
                           "order":0,
                           "path":"Personnel>Friendliness"
                        }
                     ]
                  }
               ]
            },
            "uniqueID":"25dac7c4-1d08-4302-8740-3dea0f89cab5"
         }
      ],
      "answerTags":[
         
      ],
      "forwardedMessages":[
         
      ],
      "repliedMessages":[
         
      ],
      "notes":[
         
      ],
      "hasBeenDisabledForReview":false,
      "uniqueID":"36e2cd3f-8ae9-449a-90d0-5270b9e4ceb9"
   }
]"""

# hellocustomer.md, "10. API-Call 4 - Get NPS": "The returned object will be a JSON object
# like this:" (POST .../analysis/nps/getnpsscore/{startDate}/{endDate})
HELLOCUSTOMER_NPS = r"""{
   "nps":31,
   "detractors":5.26,
   "passive":57.9,
   "promoters":36.84,
   "date":"2015-12-16T14:45:31.3778294+00:00",
   "uniqueID":"47890417-0442-48a4-b981-4bdd5b41bf0d"
}"""

# dropthought.md, "Step #1: Authentication", "Example Response" (POST /api/authenticate/login)
DROPTHOUGHT_LOGIN = r"""{
"result": {
"accessToken": "abcdefZYXg",
"refreshToken": "abcdefZYXgwerwe"
},
"success": true
}"""

# dropthought.md, "Step #3: Adding Contact and Triggering Program", "Sample Response:"
# (POST /dtapp/api/participant/?participantgroupuuid=...)
DROPTHOUGHT_PARTICIPANT = r"""{
"result": [
{
"created_time": "2023-03-07 10:51:02.0",
"data": "[\"DST1234\", \"Sudhakar\", \"sudhakar1@dropthought.com\", \"+6738699729\", \"Ag566879\", \"Agent 2\", \"INQ4576\", \"2023-01-01 14:00:00\", \"Email\", \"MR\", \"Mobi\", \"Fixed\", \"Billing Relared\", \"152 Agent\", \"Test Location\", \"2022-01-01 14:00:00\", \"Test User\", \"\"]",
"meta_data": "[\"String\", \"NAME\", \"EMAIL\", \"PHONE\", \"String\", \"String\", \"String\", \"DATE\", \"String\", \"String\", \"String\", \"String\", \"String\", \"String\", \"String\", \"DATE\", \"String\", \"STRING\"]",
"header": "[\"Account Number\", \"Customer Name\", \"Customer Email\", \"Customer Contact No\", \"Login ID\", \"User Name\", \"Interaction ID\", \"Closed Date\", \"Ticket Source\", \"Ticket Type\", \"Service Category\", \"Service Type\", \"Problem Type\", \"Role\", \"Location\", \"Created date\", \"Closed by\", \"Primary Key\"]",
"phi_data": "[false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false]",
"id": 4,
"primary_key": "Sudhakarsudhakar1@dropthought.com",
"created_by": 718,
"participant_uuid": "e29272f4-f572-421f-8662-58428a2cba47"
}
],
"success": true
}"""

# dropthought.md, "Step #3: Adding Contact and Triggering Program", "Request Body:" (its
# list's metadata types are the Sample Response's meta_data)
DROPTHOUGHT_PARTICIPANT_REQUEST = r"""{
"header": [
"Account Number",
"Customer Name",
"Customer Email",
"Customer Contact No",
"Login ID",
"User Name",
"Interaction ID",
"Closed Date",
"Ticket Source",
"Ticket Type",
"Service Category",
"Service Type",
"Problem Type",
"Role",
"Location",
"Created date",
"Closed by"
],
"data": [
"DST1234",
"Sudhakar",
"sudhakar1@dropthought.com",
"+6738699729",
"Ag566879",
"Agent 2",
"INQ4576",
"2023-01-01 14:00:00",
"Email",
"MR",
"Mobi",
"Fixed",
"Billing Relared",
"152 Agent",
"Test Location",
"2022-01-01 14:00:00",
"Test User"
]
}"""

# hellocustomer.md, "8. API-Call 2 - Adding multiple respondents": "The body of the POST
# envelope must be a JSON object:" (POST .../respondent/addmultipletocache)
HELLOCUSTOMER_ADDMULTIPLE_REQUEST = r"""[
   {
      "firstName":"John",
      "lastName":"Doe",
      "email":"john.doe@johnscompany.com",
      "custom_UniqueID":"8754864354",
      "language_UniqueID":"1b5c1275-4f92-422f-b1fc-799bf8e30598",
      "campaign_UniqueID":"c8dc5f94-a9e8-4743-8744-e66a73a7e724",
      "keyValues":{
         "key1":"value1",
         "Key2":"value2"
      }
   },
   {
      "firstName":"Jessica",
      "lastName":"Day",
      "email":"jessica.day@hotmail.com",
      "custom_UniqueID":"8754864354",
      "language_UniqueID":"1b5c1275-4f92-422f-b1fc-799bf8e30598",
      "campaign_UniqueID":"c8dc5f94-a9e8-4743-8744-e66a73a7e724",
      "keyValues":{
         "key1":"value1",
         "Key2":"value2"
      }
   }
]"""

# hellocustomer.md, "10. API-Call 4 - Get NPS": "submit the following JSON object within
# the body of your POST envelope:"
HELLOCUSTOMER_NPS_REQUEST = r"""[
   {
      "key":"store",
      "filterValues":[
         "Antwerpen"
      ]
   }
]"""

# BDSignalVine/docbox, content/api.md, "### Program Participants", "#### Participants
# Response" (GET /v1/programs/:programId/participants)
SIGNALVINE_PARTICIPANTS = r"""{
  "items": [
    {
      "id": "b81bce68-af95-4f7a-9dfd-5e85599cd88f",
      "customerId": "",
      "programId": "9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d",
      "phone": "+15552813987"
    },
    {
      "id": "405b609a-9e48-4f4e-a1f7-c3292465a8e0",
      "customerId": "",
      "programId": "9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d",
      "phone": "+15557059460"
    },
    {
      "id": "e76a8e4d-e04e-4059-854f-8a5ad0c18f34",
      "customerId": "",
      "programId": "9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d",
      "phone": "+15550738497"
    }
  ],
  "links": [
    {
      "rel": "self",
      "uri": "/v1/programs/9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d/participants"
    },
    {
      "rel": "first",
      "uri": "/v1/programs/9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d/participants"
    },
    {
      "rel": "prev",
      "uri": "/v1/programs/9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d/participants"
    },
    {
      "rel": "next",
      "uri": "/v1/programs/9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d/participants"
    },
    {
      "rel": "last",
      "uri": "/v1/programs/9c93c9ab-b58c-49d8-a8f7-4b4a26707c3d/participants"
    }
  ],
  "total": 10,
  "offset": 0,
  "count": 25,
  "nextOffset": 0,
  "prevOffset": 0,
  "lastOffset": 0,
  "pages": 1
}"""
