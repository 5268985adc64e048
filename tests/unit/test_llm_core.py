"""The LLM agent's pure core: clauses from a token stream, the bounded history, what enters it
when the caller interrupts, tool calls assembled from their fragments and checked."""

from __future__ import annotations

import re

import orjson
import pytest

from bridge.agent.llm_core import (
    MAX_CLAUSE_CHARS,
    MAX_DTMF_DIGITS,
    MAX_TOOL_CALLS,
    TOOLS,
    AssistantTurn,
    BadToolCall,
    ClauseSplitter,
    Conversation,
    EndCall,
    SendDtmf,
    ToolCall,
    ToolCallAssembler,
    ToolCallError,
    tool_action,
)


def split(text: str, *, by_words: bool = True) -> list[str]:
    """The clauses of `text` streamed one word (token) at a time, or pushed whole."""
    splitter = ClauseSplitter()
    tokens = re.findall(r"\S+\s*", text) if by_words else [text]
    clauses = [clause for token in tokens for clause in splitter.push(token)]
    return clauses + splitter.flush()


@pytest.mark.parametrize(("text", "clauses"), [
    ("Hello there. How are you?", ["Hello there. ", "How are you?"]),
    ("Sure, I can help; what is it: a bill?",
     ["Sure, ", "I can help; ", "what is it: ", "a bill?"]),
    ("It costs 3.5 dollars. Thanks!", ["It costs 3.5 dollars. ", "Thanks!"]),
    ("Bring a fruit, e.g. an apple. Done.", ["Bring a fruit, ", "e.g. an apple. ", "Done."]),
    ("Ask Dr. Smith and J. Doe. Bye.", ["Ask Dr. Smith and J. Doe. ", "Bye."]),
    ("It has 1,000 rooms! Wow.", ["It has 1,000 rooms! ", "Wow."]),
    ('He said "stop." Then left.', ['He said "stop." ', "Then left."]),
    ("Wait… what? Really!", ["Wait… ", "what? ", "Really!"]),
    ("مرحبا، كيف حالك؟ أنا بخير.", ["مرحبا، ", "كيف حالك؟ ", "أنا بخير."]),
    ("نعم؛ بالتأكيد", ["نعم؛ ", "بالتأكيد"]),
    ("", []),
    ("   ", []),
])
def test_clauses_table(text: str, clauses: list[str]) -> None:
    assert split(text) == clauses
    assert split(text, by_words=False) == clauses  # the same whole as in tokens


def test_a_clause_leaves_as_soon_as_it_is_complete() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Hello") == []
    assert splitter.push(" there.") == []  # "." at the end so far may be "3.5": waits
    assert splitter.push(" How") == ["Hello there. "]
    assert splitter.flush() == ["How"]


def test_a_long_clause_is_cut_at_a_word_boundary() -> None:
    words = " ".join(f"word{n}" for n in range(80))  # no punctuation at all
    clauses = split(words)
    assert len(clauses) > 1
    assert "".join(clauses) == words  # lossless
    assert all(len(c) <= MAX_CLAUSE_CHARS for c in clauses)
    assert all(c.endswith(" ") for c in clauses[:-1])  # never inside a word


def test_a_word_longer_than_a_clause_is_cut_inside_it() -> None:
    clauses = split("x" * (MAX_CLAUSE_CHARS * 2 + 5), by_words=False)
    assert [len(c) for c in clauses] == [MAX_CLAUSE_CHARS, MAX_CLAUSE_CHARS, 5]


# -- the history -------------------------------------------------------------------------------

def test_messages_start_with_the_system_prompt_and_keep_the_turns() -> None:
    conversation = Conversation("Be brief.")
    conversation.add_assistant("Hello!")  # the greeting
    conversation.add_user("Hi")
    conversation.add_assistant("How can I help? ")
    conversation.add_assistant("   ")  # nothing said, no tool called: nothing to remember
    assert conversation.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "How can I help?"},
    ]


def test_no_system_message_without_a_prompt() -> None:
    conversation = Conversation("")
    conversation.add_user("Hello?")
    assert conversation.messages() == [{"role": "user", "content": "Hello?"}]


def test_history_is_bounded_by_messages() -> None:
    conversation = Conversation("sys", max_messages=5, max_chars=10_000)
    for n in range(10):
        conversation.add_user(f"question {n}")
        conversation.add_assistant(f"answer {n}")
    assert [m.content for m in conversation.history] == [
        "answer 7", "question 8", "answer 8", "question 9", "answer 9"]
    assert conversation.messages()[0] == {"role": "system", "content": "sys"}


def test_history_is_bounded_by_characters() -> None:
    conversation = Conversation("sys", max_messages=100, max_chars=100)
    for n in range(10):
        conversation.add_user(f"{n} " + "q" * 30)
        conversation.add_assistant("a" * 20)
    assert sum(m.chars() for m in conversation.history) <= 100
    contents = [m.content or "" for m in conversation.history]
    assert contents[-2].startswith("9 ")  # the newest turns kept
    assert not any(c.startswith(("0 ", "7 ")) for c in contents)


def test_a_tool_call_leaves_the_history_with_its_result() -> None:
    conversation = Conversation("sys", max_messages=3, max_chars=10_000)
    conversation.add_user("press one")
    conversation.add_assistant("", [ToolCall("c1", "send_dtmf", '{"digits": "1"}')])
    conversation.add_tool_result("c1", "ok")
    conversation.add_assistant("Done.")  # 4 messages: the user turn leaves, and so do the
    # call and its result (providers refuse either without the other)
    assert [(m.role, m.content) for m in conversation.history] == [("assistant", "Done.")]


def test_a_tool_call_message_is_sent_as_the_api_takes_it() -> None:
    conversation = Conversation("")
    conversation.add_user("press one")
    conversation.add_assistant("", [ToolCall("c1", "send_dtmf", '{"digits": "1"}')])
    conversation.add_tool_result("c1", "ok")
    assert conversation.messages()[1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "send_dtmf", "arguments": '{"digits": "1"}'}}]},
        {"role": "tool", "content": "ok", "tool_call_id": "c1"},
    ]


def test_a_user_message_is_bounded() -> None:
    conversation = Conversation("")
    conversation.add_user("x" * 100_000)
    content = conversation.history[0].content
    assert content is not None and len(content) == 4_000


# -- interruption ------------------------------------------------------------------------------

def test_an_interrupted_turn_keeps_only_what_was_heard() -> None:
    conversation = Conversation("")
    conversation.add_user("What is the weather?")
    conversation.add_assistant("It is sunny today. Tomorrow it rains.")
    assert conversation.heard("It is sunny today. Tomorrow it rains.", "It is sunny")
    assert conversation.history[-1].content == "It is sunny"
    # Fixed once: the same utterance is not matched again.
    assert not conversation.heard("It is sunny today. Tomorrow it rains.", "It")


def test_an_utterance_cut_while_it_streamed_matches_its_turn() -> None:
    # The utterance's text is what had been pushed when it was cut: a prefix of the turn.
    conversation = Conversation("")
    conversation.add_user("Tell me a story")
    conversation.add_assistant("Once upon a time, there was a phone. It rang.")
    assert conversation.heard("Once upon a time, ", "Once upon")
    assert conversation.history[-1].content == "Once upon"


def test_the_latest_matching_turn_is_fixed() -> None:
    conversation = Conversation("")
    conversation.add_user("a")
    conversation.add_assistant("Yes, of course.")
    conversation.add_user("b")
    conversation.add_assistant("Yes, of course.")
    conversation.heard("Yes, of course.", "Yes,")
    assert [m.content for m in conversation.history] == ["a", "Yes, of course.", "b", "Yes,"]


def test_a_turn_heard_not_at_all_leaves_the_history() -> None:
    conversation = Conversation("")
    conversation.add_user("a")
    conversation.add_assistant("Something long the caller never heard.")
    assert conversation.heard("Something long the caller never heard.", "")
    assert [m.role for m in conversation.history] == ["user"]


def test_an_utterance_not_the_models_is_not_matched() -> None:
    conversation = Conversation("")
    conversation.add_user("a")
    conversation.add_assistant("The reply.")
    assert not conversation.heard("Sorry, I am having trouble.", "Sorry")
    assert not conversation.heard("", "")
    assert conversation.history[-1].content == "The reply."


def test_a_cancelled_turn_records_only_the_clauses_spoken() -> None:
    turn = AssistantTurn()
    spoken = turn.content("Sure, let me check that for") + turn.content(" you")
    assert spoken == ["Sure, "]
    assert turn.spoken == "Sure, "  # "let me check that for you" never became a clause
    assert turn.finish() == ["let me check that for you"]  # unless the reply completes
    assert turn.spoken == "Sure, let me check that for you"


# -- tools -------------------------------------------------------------------------------------

def test_tool_calls_are_assembled_from_fragments_by_index() -> None:
    assembler = ToolCallAssembler()
    assembler.add([{"index": 0, "id": "call_a", "type": "function",
                    "function": {"name": "send_dtmf", "arguments": ""}}])
    assembler.add([{"index": 1, "id": "call_b", "function": {"name": "end_", "arguments": "{"}}])
    assembler.add([{"index": 0, "function": {"arguments": '{"dig'}}])
    assembler.add([{"index": 1, "function": {"name": "call", "arguments": "}"}},
                   {"index": 0, "function": {"arguments": 'its": "1#"}'}}])
    assert assembler.calls() == [ToolCall("call_a", "send_dtmf", '{"digits": "1#"}'),
                                 ToolCall("call_b", "end_call", "{}")]


def test_a_tool_call_without_id_or_arguments_gets_defaults() -> None:
    assembler = ToolCallAssembler()
    assembler.add([{"index": 0, "function": {"name": "end_call"}}])
    assert assembler.calls() == [ToolCall("call_0", "end_call", "{}")]


@pytest.mark.parametrize("fragments", [
    [{"index": -1, "function": {"name": "x"}}],
    [{"index": "0", "function": {"name": "x"}}],
    [{"index": True, "function": {"name": "x"}}],
    [{"index": n, "function": {"name": "x"}} for n in range(MAX_TOOL_CALLS + 1)],
    [{"index": 0, "function": {"name": "x", "arguments": "a" * 3_000}}],
    [{"index": 0, "function": {"name": "n" * 65}}],
])
def test_tool_fragments_out_of_bounds_are_refused(fragments: list[dict[str, object]]) -> None:
    with pytest.raises(ToolCallError):
        ToolCallAssembler().add(fragments)


@pytest.mark.parametrize(("name", "arguments", "action"), [
    ("end_call", "{}", EndCall(None)),
    ("end_call", '{"goodbye": "  Bye now!  "}', EndCall("Bye now!")),
    ("end_call", '{"goodbye": ""}', EndCall(None)),
    ("end_call", '{"goodbye": 3}', BadToolCall("goodbye must be a string")),
    ("send_dtmf", '{"digits": "0123456789*#"}', SendDtmf("0123456789*#")),
    ("send_dtmf", '{"digits": "12a"}',
     BadToolCall(f"digits must be 1 to {MAX_DTMF_DIGITS} of 0-9, * and #")),
    ("send_dtmf", '{"digits": ""}',
     BadToolCall(f"digits must be 1 to {MAX_DTMF_DIGITS} of 0-9, * and #")),
    ("send_dtmf", orjson.dumps({"digits": "1" * (MAX_DTMF_DIGITS + 1)}).decode(),
     BadToolCall(f"digits must be 1 to {MAX_DTMF_DIGITS} of 0-9, * and #")),
    ("send_dtmf", "{}", BadToolCall(f"digits must be 1 to {MAX_DTMF_DIGITS} of 0-9, * and #")),
    ("send_dtmf", '{"digits": "1"', BadToolCall("arguments are not JSON")),
    ("send_dtmf", '["1"]', BadToolCall("arguments are not a JSON object")),
    ("transfer", '{"to": "+1555"}', BadToolCall("no tool named 'transfer'")),
])
def test_tool_actions_are_checked(name: str, arguments: str, action: object) -> None:
    assert tool_action(ToolCall("c", name, arguments)) == action


def test_the_tools_offered_are_end_call_and_send_dtmf_only() -> None:
    names = [tool["function"]["name"] for tool in TOOLS]
    assert names == ["end_call", "send_dtmf"]  # transfer is issue 23's
    dtmf = TOOLS[1]["function"]["parameters"]
    assert dtmf["required"] == ["digits"]
    assert re.fullmatch(dtmf["properties"]["digits"]["pattern"], "1*#")
    assert not re.fullmatch(dtmf["properties"]["digits"]["pattern"], "1" * (MAX_DTMF_DIGITS + 1))
    orjson.dumps(TOOLS)  # JSON as sent
