// Chat templates: family recognition from real template texts and rendering in each family's
// published format (expected strings follow llama.cpp's tests/test-chat-template.cpp conversation).
#include <doctest/doctest.h>

#include "core/common.h"
#include "models/chat_template.h"

using namespace mf;

namespace {

// The conversation llama.cpp's template test renders.
const std::vector<ChatMessage> kConversation = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

std::string render(ChatFamily f, bool add_assistant = true) {
    return render_chat(ChatTemplate{f, ""}, kConversation, add_assistant);
}

const char* kSmolLM2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const char* kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}";

const char* kGemmaTemplate =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

}  // namespace

TEST_CASE("ChatML renders role headers and im_end after every turn") {
    CHECK(render(ChatFamily::CHATML) ==
          "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
          "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
          "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n"
          "<|im_start|>assistant\n");
}

TEST_CASE("SmolLM2's template is ChatML with its default system prompt") {
    const ChatTemplate t = chat_template_from_text(kSmolLM2Template);
    CHECK(t.family == ChatFamily::CHATML);
    CHECK(t.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    CHECK(render_chat(t, {{"user", "Hi"}}, true) ==
          "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    // A conversation with its own system prompt does not get the default one.
    CHECK(render_chat(t, {{"system", "Be brief."}, {"user", "Hi"}}, false) ==
          "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST_CASE("Llama 3 renders header ids and trims messages") {
    CHECK(chat_template_from_text(kLlama3Template).family == ChatFamily::LLAMA3);
    CHECK(render(ChatFamily::LLAMA3) ==
          "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST_CASE("Gemma folds the system prompt into the first user turn and calls the assistant model") {
    CHECK(chat_template_from_text(kGemmaTemplate).family == ChatFamily::GEMMA);
    CHECK(render(ChatFamily::GEMMA) ==
          "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n"
          "<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n"
          "<start_of_turn>model\n   I am an assistant   <end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n"
          "<start_of_turn>model\n");
}

TEST_CASE("DeepSeek V3 and V2 formats") {
    CHECK(chat_template_from_text("{{'<｜Assistant｜>'}}").family == ChatFamily::DEEPSEEK3);
    CHECK(render(ChatFamily::DEEPSEEK3) ==
          "You are a helpful assistant<｜User｜>Hello<｜Assistant｜>Hi there<｜end▁of▁sentence｜><｜User｜>Who are you"
          "<｜Assistant｜>   I am an assistant   <｜end▁of▁sentence｜><｜User｜>Another question<｜Assistant｜>");
    CHECK(chat_template_from_text("{{ 'Assistant: ' + message['content'] }}").family == ChatFamily::DEEPSEEK2);
    CHECK(render(ChatFamily::DEEPSEEK2) ==
          "You are a helpful assistant\n\nUser: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>User: Who are you\n\n"
          "Assistant:    I am an assistant   <｜end▁of▁sentence｜>User: Another question\n\nAssistant:");
}

TEST_CASE("Mistral formats: v3 puts the system text in the first [INST], v7 has a system block") {
    CHECK(chat_template_from_text("{{ '[INST] ' + message['content'] + '[/INST]' }}").family == ChatFamily::MISTRAL);
    CHECK(render(ChatFamily::MISTRAL) ==
          "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST]"
          "    I am an assistant   </s>[INST] Another question[/INST]");
    CHECK(chat_template_from_text("[SYSTEM_PROMPT] [INST]").family == ChatFamily::MISTRAL_V7);
    CHECK(render(ChatFamily::MISTRAL_V7) ==
          "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>"
          "[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]");
}

TEST_CASE("Llama 2 wraps the system prompt in <<SYS>>") {
    CHECK(chat_template_from_text("[INST] <<SYS>>").family == ChatFamily::LLAMA2);
    CHECK(render(ChatFamily::LLAMA2) ==
          "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>"
          "<s>[INST] Who are you [/INST]    I am an assistant    </s><s>[INST] Another question [/INST]");
}

TEST_CASE("rendering without the assistant prompt is a prefix of rendering with it") {
    for (ChatFamily f : {ChatFamily::CHATML, ChatFamily::LLAMA3, ChatFamily::GEMMA, ChatFamily::DEEPSEEK3}) {
        const std::string closed = render(f, false), open = render(f, true);
        CHECK(open.compare(0, closed.size(), closed) == 0);
    }
}

TEST_CASE("unknown templates and names are clear errors") {
    CHECK_THROWS_WITH_AS(chat_template_from_text("{{ messages }}"), doctest::Contains("--chat-template"), Error);
    CHECK_THROWS_WITH_AS(chat_template_from_name("vicuna"), doctest::Contains("unknown chat template 'vicuna'"), Error);
    CHECK(chat_template_from_name("llama3").family == ChatFamily::LLAMA3);
    CHECK(chat_template_from_text("").family == ChatFamily::CHATML);
}
