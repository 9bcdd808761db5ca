"""The canonical model: OpenAI's Responses API shape, which every adapter translates to and from.

Requests are validated into `ResponsesRequest`; output items, responses and stream events are the
Responses API's own JSON objects (plain dicts), so OpenAI-native fields pass through untouched and
the official SDK's types are the schema.
"""
