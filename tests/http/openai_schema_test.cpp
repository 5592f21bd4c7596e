// HTTP API schema (src/coordinator/http): request parsing/validation of every field and error
// case, and the exact JSON / SSE shapes of the responses.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "coordinator/http/openai_request.h"
#include "coordinator/http/openai_response.h"

namespace expertmesh::coordinator::http {
namespace {

const ApiLimits kLim;

template <typename T>
std::string error_of(const Result<T>& r) {
  return r.ok() ? std::string("<ok>") : r.status().message();
}

TEST(OpenAiRequest, ChatParsesEveryField) {
  auto r = parse_chat_request(R"({
    "model": "m", "user": "u",
    "messages": [
      {"role": "system", "content": "sys"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "reasoning_content": "why",
       "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "42"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "b": 1, "a": 2}}}],
    "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true,
    "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7,
    "stop": ["\n\n", "END"], "logprobs": true, "top_logprobs": 3, "n": 1,
    "tool_choice": "none", "chat_template_kwargs": {"enable_thinking": false}})",
                              kLim);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->user, "u");
  ASSERT_EQ(r->messages.size(), 4u);
  EXPECT_EQ(*r->messages[1].content, "a\nb");
  EXPECT_FALSE(r->messages[2].content.has_value());
  EXPECT_EQ(r->messages[2].reasoning_content, "why");
  ASSERT_EQ(r->messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(r->messages[2].tool_calls[0].name, "f");
  EXPECT_EQ(r->messages[2].tool_calls[0].arguments, "{\"x\":1}");
  EXPECT_EQ(r->messages[3].tool_call_id, "c1");
  EXPECT_TRUE(r->gen.stream);
  EXPECT_TRUE(r->gen.include_usage);
  EXPECT_TRUE(r->gen.ignore_eos);
  EXPECT_EQ(r->gen.n_predict, 64);
  EXPECT_DOUBLE_EQ(*r->gen.temperature, 0.5);
  EXPECT_DOUBLE_EQ(*r->gen.top_p, 0.9);
  EXPECT_EQ(*r->gen.top_k, 40);
  EXPECT_DOUBLE_EQ(*r->gen.min_p, 0.05);
  EXPECT_EQ(*r->gen.seed, 7);
  EXPECT_EQ(r->gen.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->gen.n_probs, 3);
  EXPECT_EQ(r->chat_template_kwargs["enable_thinking"], false);
  // Key order of the client's tool schema is kept (it reaches the template's tojson).
  EXPECT_EQ(r->tools[0]["function"]["parameters"].dump(), R"({"type":"object","b":1,"a":2})");
  // tool_choice "none": the tools still reach the template, the output is not parsed for calls.
  EXPECT_EQ(r->tool_choice, ToolChoice::kNone);
  EXPECT_FALSE(parses_tool_calls(*r));
  Json msgs = messages_for_template(*r);
  EXPECT_EQ(msgs[2]["content"], nullptr);
  EXPECT_EQ(msgs[2]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(msgs[3]["tool_call_id"], "c1");
}

TEST(OpenAiRequest, ToolChoiceDecidesWhetherCallsAreParsed) {
  const std::string m = R"("messages":[{"role":"user","content":"x"}])";
  const std::string tools = R"(,"tools":[{"type":"function","function":{"name":"f"}}])";
  auto parses = [&](const std::string& extra) {
    auto r = parse_chat_request("{" + m + extra + "}", kLim);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() && parses_tool_calls(*r);
  };
  EXPECT_FALSE(parses(""));  // no tools, nothing to call
  EXPECT_TRUE(parses(tools));
  EXPECT_TRUE(parses(tools + R"(,"tool_choice":"auto")"));
  EXPECT_TRUE(parses(tools + R"(,"tool_choice":null)"));
  EXPECT_FALSE(parses(tools + R"(,"tool_choice":"none")"));
  EXPECT_FALSE(parses(R"(,"tools":[])"));
}

TEST(OpenAiRequest, PenaltiesAndLogitBias) {
  auto r = parse_oai_completion_request(R"({"prompt":"x","repeat_penalty":1.1,"repeat_last_n":-1,
    "frequency_penalty":0.5,"presence_penalty":-0.25,"penalize_nl":true,
    "logit_bias":{"15":-2.5,"7":false}})",
                                        kLim);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_DOUBLE_EQ(*r->gen.repeat_penalty, 1.1);
  EXPECT_EQ(*r->gen.repeat_last_n, -1);
  EXPECT_DOUBLE_EQ(*r->gen.frequency_penalty, 0.5);
  EXPECT_DOUBLE_EQ(*r->gen.presence_penalty, -0.25);
  EXPECT_TRUE(*r->gen.penalize_nl);
  ASSERT_EQ(r->gen.logit_bias.size(), 2u);
  EXPECT_EQ(*r->gen.logit_bias[0].id, 15);
  EXPECT_FLOAT_EQ(r->gen.logit_bias[0].bias, -2.5f);
  EXPECT_EQ(*r->gen.logit_bias[1].id, 7);
  EXPECT_TRUE(std::isinf(r->gen.logit_bias[1].bias) && r->gen.logit_bias[1].bias < 0);
  // The peer's array form, with token ids or text.
  auto a = parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],
    "logit_bias":[[3,1.5],["hello",false]]})",
                              kLim);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_EQ(a->gen.logit_bias.size(), 2u);
  EXPECT_EQ(*a->gen.logit_bias[0].id, 3);
  EXPECT_FALSE(a->gen.logit_bias[1].id.has_value());
  EXPECT_EQ(a->gen.logit_bias[1].text, "hello");
  EXPECT_EQ(a->gen.logit_bias[1].field, "logit_bias[1]");
  // Absent: nothing set (the server defaults apply).
  auto d = parse_oai_completion_request(R"({"prompt":"x"})", kLim);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->gen.repeat_penalty || d->gen.frequency_penalty || d->gen.presence_penalty || d->gen.repeat_last_n ||
               d->gen.penalize_nl);
  EXPECT_TRUE(d->gen.logit_bias.empty());

  auto err = [&](const std::string& extra) {
    return error_of(parse_oai_completion_request(R"({"prompt":"x",)" + extra + "}", kLim));
  };
  EXPECT_EQ(err(R"("repeat_penalty":0)"), "\"repeat_penalty\" must be > 0 and <= 100");
  EXPECT_EQ(err(R"("frequency_penalty":3)"), "\"frequency_penalty\" must be between -2 and 2");
  EXPECT_EQ(err(R"("presence_penalty":"a")"), "\"presence_penalty\" must be a number");
  EXPECT_EQ(err(R"("repeat_last_n":-2)"), "\"repeat_last_n\" must be >= -1 (-1: the whole context, 0: off)");
  EXPECT_EQ(err(R"("penalize_nl":1)"), "\"penalize_nl\" must be a boolean");
  EXPECT_EQ(err(R"("logit_bias":{"a":1})"), "\"logit_bias[\"a\"]\" must be keyed by a token id");
  EXPECT_EQ(err(R"("logit_bias":{"1":true})"), "\"logit_bias[\"1\"]\" must be a finite number or false");
  EXPECT_EQ(err(R"("logit_bias":[[1]])"), "\"logit_bias[0]\" must be a [token, bias] pair");
  EXPECT_EQ(err(R"("logit_bias":[[[1],2]])"), "\"logit_bias[0][0]\" must be a token id or a non-empty string");
  EXPECT_EQ(err(R"("logit_bias":5)"),
            "\"logit_bias\" must be an object of token id -> bias, or an array of [token, bias]");
  // Output control we do not have: refused at non-neutral values, accepted at neutral ones.
  EXPECT_NE(err(R"("response_format":{"type":"json_schema","json_schema":{}})").find("grammar-constrained"),
            std::string::npos);
  EXPECT_EQ(err(R"("response_format":{"type":"yaml"})"),
            "\"response_format.type\" must be \"text\", \"json_object\" or \"json_schema\"");
  EXPECT_NE(err(R"("grammar":"root ::= \"a\"")").find("\"grammar\""), std::string::npos);
  EXPECT_NE(err(R"("json_schema":{"type":"object"})").find("\"json_schema\""), std::string::npos);
  EXPECT_NE(err(R"("typical_p":0.9)").find("\"typical_p\": 0.9 is not supported"), std::string::npos);
  EXPECT_NE(err(R"("dry_multiplier":0.8)").find("\"dry_multiplier\""), std::string::npos);
  EXPECT_TRUE(parse_oai_completion_request(R"({"prompt":"x","response_format":{"type":"text"},"grammar":"",
    "typical_p":1,"tfs_z":1,"mirostat":0,"xtc_probability":0,"dry_multiplier":0,"top_n_sigma":-1,
    "dynatemp_range":0})",
                                           kLim)
                  .ok());
}

TEST(OpenAiRequest, TokenLimitFieldsAndPriority) {
  auto r = parse_chat_request(
      R"({"messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"max_tokens":9})", kLim);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->gen.n_predict, 5);
  r = parse_chat_request(R"({"messages":[{"role":"user","content":"x"}]})", kLim);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->gen.n_predict, -1);
  EXPECT_FALSE(r->gen.temperature.has_value());
  EXPECT_FALSE(r->gen.stream);
  auto c = parse_completion_request(R"({"prompt":"x","n_predict":-1,"max_tokens":3})", kLim);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->gen.n_predict, -1);  // /completion: n_predict wins, -1 = unlimited (capped by the server)
  c = parse_completion_request(R"({"prompt":"x","n_predict":40000})", kLim);
  EXPECT_EQ(error_of(c), "\"n_predict\" must be <= 32768");
  r = parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})", kLim);
  EXPECT_EQ(error_of(r), "\"max_tokens\" must be >= 1");
}

TEST(OpenAiRequest, ErrorsNameTheFieldAndType) {
  const std::string m = R"("messages":[{"role":"user","content":"x"}])";
  auto chat = [&](const std::string& extra) { return error_of(parse_chat_request("{" + m + extra + "}", kLim)); };
  EXPECT_EQ(chat(R"(,"temperature":"hot")"), "\"temperature\" must be a number");
  EXPECT_EQ(chat(R"(,"temperature":-1)"), "\"temperature\" must be between 0 and 100");
  EXPECT_EQ(chat(R"(,"top_p":1.5)"), "\"top_p\" must be between 0 and 1");
  EXPECT_EQ(chat(R"(,"min_p":true)"), "\"min_p\" must be a number");
  EXPECT_EQ(chat(R"(,"top_k":1.5)"), "\"top_k\" must be an integer");
  EXPECT_EQ(chat(R"(,"top_k":-2)"), "\"top_k\" must be >= 0");
  EXPECT_EQ(chat(R"(,"seed":"1")"), "\"seed\" must be an integer");
  EXPECT_EQ(chat(R"(,"seed":-5)"), "\"seed\" must be -1 or an integer in [0, 4294967295]");
  EXPECT_EQ(chat(R"(,"max_tokens":"5")"), "\"max_tokens\" must be an integer");
  EXPECT_EQ(chat(R"(,"stream":"yes")"), "\"stream\" must be a boolean");
  EXPECT_EQ(chat(R"(,"ignore_eos":1)"), "\"ignore_eos\" must be a boolean");
  EXPECT_EQ(chat(R"(,"stream_options":5)"), "\"stream_options\" must be an object");
  EXPECT_EQ(chat(R"(,"stream_options":{"include_usage":1})"), "\"stream_options.include_usage\" must be a boolean");
  EXPECT_EQ(chat(R"(,"stop":5)"), "\"stop\" must be a string or an array of strings");
  EXPECT_EQ(chat(R"(,"stop":["a",1])"), "\"stop[1]\" must be a string");
  EXPECT_EQ(chat(R"(,"stop":[""])"), "\"stop\" must not contain empty strings");
  EXPECT_EQ(chat(R"(,"logprobs":1)"), "\"logprobs\" must be a boolean");
  EXPECT_EQ(chat(R"(,"top_logprobs":2)"), "\"top_logprobs\" requires \"logprobs\": true");
  EXPECT_EQ(chat(R"(,"logprobs":true,"top_logprobs":50)"), "\"top_logprobs\" must be between 0 and 20");
  EXPECT_EQ(chat(R"(,"n":2)"), "\"n\" must be 1 (one choice per request)");
  EXPECT_EQ(chat(R"(,"model":5)"), "\"model\" must be a string");
  EXPECT_EQ(chat(R"(,"user":[])"), "\"user\" must be a string");
  EXPECT_EQ(chat(R"(,"tools":{})"), "\"tools\" must be an array");
  EXPECT_EQ(chat(R"(,"tools":[{"type":"function","function":{}}])"),
            "\"tools[0].function.name\" must be a non-empty string");
  EXPECT_EQ(chat(R"(,"tools":[{"type":"retrieval"}])"), "\"tools[0].type\" must be \"function\"");
  EXPECT_EQ(chat(R"(,"chat_template_kwargs":[])"), "\"chat_template_kwargs\" must be an object");
  EXPECT_EQ(chat(R"(,"tool_choice":"any")"),
            "\"tool_choice\" must be \"auto\", \"none\" or \"required\" (got \"any\")");
  EXPECT_EQ(chat(R"(,"tool_choice":3)"), "\"tool_choice\" must be \"auto\", \"none\" or \"required\"");
  // Forcing a call cannot be honoured without constrained sampling: refused, never ignored.
  EXPECT_NE(chat(R"(,"tool_choice":"required")").find("grammar-constrained sampling"), std::string::npos);
  EXPECT_NE(chat(R"(,"tool_choice":{"type":"function","function":{"name":"f"}})").find("naming a function"),
            std::string::npos);

  auto msgs = [&](const std::string& ms) { return error_of(parse_chat_request(R"({"messages":)" + ms + "}", kLim)); };
  EXPECT_EQ(error_of(parse_chat_request("{}", kLim)), "\"messages\" is required");
  EXPECT_EQ(msgs("{}"), "\"messages\" must be an array");
  EXPECT_EQ(msgs("[]"), "\"messages\" must not be empty");
  EXPECT_EQ(msgs("[5]"), "\"messages[0]\" must be an object");
  EXPECT_EQ(msgs(R"([{"content":"x"}])"), "\"messages[0].role\" is required");
  EXPECT_EQ(msgs(R"([{"role":"wizard","content":"x"}])"),
            "\"messages[0].role\" must be one of system, developer, user, assistant, tool");
  EXPECT_EQ(msgs(R"([{"role":"user","content":5}])"),
            "\"messages[0].content\" must be a string, an array of content parts or null");
  EXPECT_EQ(msgs(R"([{"role":"user"}])"), "\"messages[0].content\" is required for role user");
  EXPECT_EQ(msgs(R"([{"role":"assistant"}])"), "\"messages[0].content\" is required unless the message has tool_calls");
  EXPECT_EQ(msgs(R"([{"role":"user","content":[{"type":"text"}]}])"),
            "\"messages[0].content[0].text\" must be a string");
  EXPECT_EQ(msgs(R"([{"role":"user","content":[{"type":"image_url","image_url":{}}]}])"),
            "\"messages[0].content[0].type\" 'image_url' is not supported (only \"text\")");
  EXPECT_EQ(msgs(R"([{"role":"assistant","tool_calls":[{"function":{"name":""}}]}])"),
            "\"messages[0].tool_calls[0].function.name\" must be a non-empty string");
  EXPECT_EQ(msgs(R"([{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":5}}]}])"),
            "\"messages[0].tool_calls[0].function.arguments\" must be a string or an object");
}

TEST(OpenAiRequest, BodyAndLimits) {
  ApiLimits lim;
  lim.max_body_bytes = 64;
  lim.max_prompt_bytes = 10;
  lim.max_messages = 2;
  lim.max_stop_strings = 1;
  auto r = parse_chat_request(std::string(100, ' '), lim);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(api_error_from_status(r.status()).code, 413);
  EXPECT_EQ(error_of(parse_chat_request("{\"messages\":", kLim)), "request body is not valid JSON");
  EXPECT_EQ(error_of(parse_chat_request("[1]", kLim)), "request body must be a JSON object");
  EXPECT_EQ(error_of(parse_chat_request("", kLim)), "request body is not valid JSON");
  std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_NE(error_of(parse_chat_request("{\"a\":" + deep + "}", kLim)).find("nested deeper"), std::string::npos);
  EXPECT_EQ(error_of(parse_chat_request(R"({"messages":[{"role":"user","content":"01234567890"}]})", lim)),
            "\"messages\" are too long (11 bytes of text, limit 10)");
  EXPECT_EQ(
      error_of(parse_chat_request(
          R"({"messages":[{"role":"user","content":"a"},{"role":"user","content":"a"},{"role":"user","content":"a"}]})",
          ApiLimits{.max_messages = 2})),
      "\"messages\" must have at most 2 entries");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":"x","stop":["a","b"]})", lim)),
            "\"stop\" must have at most 1 strings");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":"0123456789A"})", lim)),
            "\"prompt\" is too long (11 bytes, limit 10)");
}

TEST(OpenAiRequest, Completions) {
  auto r =
      parse_oai_completion_request(R"({"model":"m","prompt":"Once","max_tokens":8,"logprobs":2,"stop":"\n"})", kLim);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->prompt, "Once");
  EXPECT_FALSE(r->prompt_is_tokens);
  EXPECT_EQ(r->gen.n_predict, 8);
  EXPECT_EQ(r->gen.n_probs, 2);
  EXPECT_EQ(r->gen.stop, std::vector<std::string>{"\n"});
  r = parse_oai_completion_request(R"({"prompt":["only one"]})", kLim);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prompt, "only one");
  r = parse_oai_completion_request(R"({"prompt":[1, 2, 3]})", kLim);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->prompt_is_tokens);
  EXPECT_EQ(r->prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({})", kLim)), "\"prompt\" is required");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":["a","b"]})", kLim)),
            "\"prompt\" with several prompts is not supported");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":[1,-2]})", kLim)),
            "\"prompt[1]\" must be a non-negative token id");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":5})", kLim)),
            "\"prompt\" must be a string or an array of token ids");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":"x","logprobs":true})", kLim)),
            "\"logprobs\" must be an integer");
  EXPECT_EQ(error_of(parse_oai_completion_request(R"({"prompt":"x","echo":true})", kLim)),
            "\"echo\": true is not supported");
  auto n = parse_completion_request(R"({"prompt":"x","n_predict":4,"n_probs":5,"stream":true})", kLim);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->gen.n_probs, 5);
  EXPECT_TRUE(n->gen.stream);
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt":"x","n_probs":-1})", kLim)),
            "\"n_probs\" must be between 0 and 20");
}

TEST(OpenAiRequest, TokenizeDetokenize) {
  auto t = parse_tokenize_request(R"({"content":"hello","add_special":true,"with_pieces":true})", kLim);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->content, "hello");
  EXPECT_TRUE(t->add_special);
  EXPECT_TRUE(t->with_pieces);
  EXPECT_EQ(error_of(parse_tokenize_request("{}", kLim)), "\"content\" is required");
  EXPECT_EQ(error_of(parse_tokenize_request(R"({"content":"x","add_special":"yes"})", kLim)),
            "\"add_special\" must be a boolean");
  auto d = parse_detokenize_request(R"({"tokens":[5, 6]})", kLim);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(error_of(parse_detokenize_request(R"({"tokens":"5"})", kLim)), "\"tokens\" must be an array of token ids");
  EXPECT_EQ(error_of(parse_detokenize_request(R"({"tokens":[1.5]})", kLim)),
            "\"tokens[0]\" must be a non-negative token id");
}

TEST(OpenAiResponse, ErrorBody) {
  auto r = parse_chat_request(R"({"messages":[],"x":1})", kLim);
  ApiError e = api_error_from_status(r.status());
  EXPECT_EQ(dump_json(error_body(e)),
            R"({"error":{"code":400,"message":"\"messages\" must not be empty","type":"invalid_request_error"}})");
  EXPECT_EQ(api_error_from_status(Status::Internal("x")).code, 500);
  EXPECT_EQ(api_error_from_status(Status::Internal("x")).type, "server_error");
  EXPECT_EQ(api_error_from_status(Status::NotFound("no model")).code, 404);
}

ResponseMeta meta() { return ResponseMeta{"chatcmpl-1", 1700000000, "tiny", std::nullopt}; }

TEST(OpenAiResponse, ChatCompletion) {
  ChatResult r;
  r.content = "Hi there";
  r.finish = FinishReason::kLength;
  r.usage = {12, 2, 4};
  EXPECT_EQ(dump_json(chat_completion_json(meta(), r)),
            R"({"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":"Hi there"},)"
            R"("logprobs":null}],"created":1700000000,"model":"tiny","system_fingerprint":"expertmesh",)"
            R"("object":"chat.completion","usage":{"completion_tokens":2,"prompt_tokens":12,"total_tokens":14,)"
            R"("prompt_tokens_details":{"cached_tokens":4}},"id":"chatcmpl-1"})");
  r.want_logprobs = true;
  r.logprobs = {{7, "Hi", -0.5, {{7, "Hi", -0.5, {}}, {9, "\xE4\xBD", -2.0, {}}}}};
  r.reasoning_content = "thought";
  Json j = chat_completion_json(meta(), r);
  EXPECT_EQ(j["choices"][0]["message"]["reasoning_content"], "thought");
  EXPECT_EQ(
      dump_json(j["choices"][0]["logprobs"]),
      R"({"content":[{"id":7,"token":"Hi","bytes":[72,105],"logprob":-0.5,"top_logprobs":[)"
      R"({"id":7,"token":"Hi","bytes":[72,105],"logprob":-0.5},{"id":9,"token":"","bytes":[228,189],"logprob":-2.0}]}]})");
  ChatResult tc;
  tc.tool_calls = {{"call_1", "function", "get_weather", Json{{"city", "Paris"}}}};
  tc.finish = FinishReason::kToolCalls;
  Json t = chat_completion_json(meta(), tc);
  EXPECT_EQ(t["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(t["choices"][0]["message"]["content"], nullptr);
  EXPECT_EQ(
      dump_json(t["choices"][0]["message"]["tool_calls"]),
      R"([{"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},"id":"call_1"}])");
}

TEST(OpenAiResponse, ChatStreamFrames) {
  ResponseMeta m = meta();
  EXPECT_EQ(
      sse_frame(chat_chunk_role_json(m)),
      "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],"
      "\"created\":1700000000,\"id\":\"chatcmpl-1\",\"model\":\"tiny\",\"system_fingerprint\":\"expertmesh\","
      "\"object\":\"chat.completion.chunk\"}\n\n");
  EXPECT_EQ(dump_json(chat_chunk_content_json(m, "Hel", {})["choices"][0]["delta"]), R"({"content":"Hel"})");
  EXPECT_EQ(dump_json(chat_chunk_content_json(m, "hmm", {}, true)["choices"][0]["delta"]),
            R"({"reasoning_content":"hmm"})");
  Json fin = chat_chunk_finish_json(m, FinishReason::kStop);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(fin["choices"][0]["delta"], Json::object());
  Json usage = chat_chunk_usage_json(m, {3, 5, 0});
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 8);
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  // Invalid UTF-8 in a piece is replaced, never thrown.
  std::string f = sse_frame(chat_chunk_content_json(m, "a\xFF", {}));
  EXPECT_EQ(f.rfind("data: {", 0), 0u);
  EXPECT_EQ(f.substr(f.size() - 2), "\n\n");
  EXPECT_NE(f.find("a\xEF\xBF\xBD"), std::string::npos);
  m.timings = Timings{10, 20.0, 4, 8.0};
  Json timed = chat_chunk_finish_json(m, FinishReason::kLength);
  EXPECT_DOUBLE_EQ(timed["timings"]["prompt_per_second"].get<double>(), 500.0);
  EXPECT_DOUBLE_EQ(timed["timings"]["predicted_per_token_ms"].get<double>(), 2.0);
}

TEST(OpenAiResponse, TextCompletion) {
  ResponseMeta m{"cmpl-9", 1, "tiny", std::nullopt};
  Json j = text_completion_json(m, " upon a time", FinishReason::kStop, Usage{4, 3, 0}, {}, false);
  EXPECT_EQ(
      dump_json(j),
      R"({"choices":[{"text":" upon a time","index":0,"logprobs":null,"finish_reason":"stop"}],"created":1,)"
      R"("model":"tiny","system_fingerprint":"expertmesh","object":"text_completion","usage":{"completion_tokens":3,)"
      R"("prompt_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}},"id":"cmpl-9"})");
  Json chunk =
      text_completion_json(m, " up", std::nullopt, std::nullopt, {{1, " up", -0.25, {{1, " up", -0.25, {}}}}}, true);
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], nullptr);
  EXPECT_FALSE(chunk.contains("usage"));
  EXPECT_EQ(dump_json(chunk["choices"][0]["logprobs"]),
            R"({"tokens":[" up"],"token_logprobs":[-0.25],"top_logprobs":[{" up":-0.25}],"text_offset":[0]})");
}

TEST(OpenAiResponse, NativeCompletionTokenizeDetokenize) {
  ResponseMeta m{"", 0, "tiny", Timings{2, 1.0, 3, 6.0}};
  NativeCompletion c;
  c.content = "text";
  c.tokens_predicted = 3;
  c.tokens_evaluated = 2;
  c.stopped_limit = true;
  Json j = native_completion_json(m, c);
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"content", "id_slot", "stop", "model", "tokens_predicted",
                                            "tokens_evaluated", "truncated", "stopped_eos", "stopped_word",
                                            "stopped_limit", "stopping_word", "tokens_cached", "timings"}));
  EXPECT_EQ(j["stop"], true);
  EXPECT_EQ(j["timings"]["predicted_n"], 3);
  EXPECT_EQ(dump_json(native_completion_chunk_json("pi", {})), R"({"content":"pi","stop":false})");
  EXPECT_EQ(dump_json(tokenize_json({1, 2})), R"({"tokens":[1,2]})");
  EXPECT_EQ(dump_json(tokenize_with_pieces_json({1, 2}, {"a", "\xE4"})),
            R"({"tokens":[{"id":1,"piece":"a"},{"id":2,"piece":[228]}]})");
  EXPECT_EQ(dump_json(detokenize_json("hi")), R"({"content":"hi"})");
}

}  // namespace
}  // namespace expertmesh::coordinator::http
