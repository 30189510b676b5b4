// Chat templates: the model's `tokenizer.chat_template` text is recognised as one of the families
// people meet (ChatML, Llama 3, Llama 2, Gemma, DeepSeek, Mistral) and rendered by that family's rules.
#pragma once

#include <string>
#include <vector>

namespace mf {

enum class ChatFamily { CHATML, LLAMA3, LLAMA2, GEMMA, DEEPSEEK2, DEEPSEEK3, MISTRAL, MISTRAL_V7 };

struct ChatMessage {
    std::string role;  // "system", "user" or "assistant"
    std::string content;
};

struct ChatTemplate {
    ChatFamily family = ChatFamily::CHATML;
    // The system prompt the template inserts when the conversation has none (ChatML models such as
    // SmolLM2 and Qwen2 ship one); empty when the template has none.
    std::string default_system;
};

// Recognises the family from the template text; throws Error when it matches none (name one with
// --chat-template). An empty text gives ChatML, as llama.cpp does.
ChatTemplate chat_template_from_text(const std::string& text);
// The family named by --chat-template ("chatml", "llama3", "llama2", "gemma", "deepseek2",
// "deepseek3", "mistral", "mistral-v7"); throws Error listing the names.
ChatTemplate chat_template_from_name(const std::string& name);
const char* chat_family_name(ChatFamily f);

// The conversation as the model expects to read it; with add_assistant the text ends where the
// assistant's reply begins. BOS is not included (the tokenizer adds it per the model's flag).
std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages, bool add_assistant);

}  // namespace mf
