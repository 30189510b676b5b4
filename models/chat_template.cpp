// Chat template recognition and rendering. Recognition looks for each family's marker tokens in
// the template text (as llama.cpp does); rendering follows the family's published format.
#include "models/chat_template.h"

#include "core/common.h"

namespace mf {

namespace {

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

// ChatML templates that insert a default system turn carry it as a literal:
// '<|im_start|>system\nYou are ...<|im_end|>\n'. Returns that literal's text, or "".
std::string chatml_default_system(const std::string& text) {
    // The newline after "system" is a real newline in most files, an escaped "\\n" in some.
    for (const char* open : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
        size_t at = text.find(open);
        if (at == std::string::npos) continue;
        at += std::string(open).size();
        const size_t end = text.find("<|im_end|>", at);
        if (end == std::string::npos) continue;
        std::string s = text.substr(at, end - at);
        // Only a plain literal counts (not a Jinja expression such as messages[0]['content']).
        if (has(s, "{{") || has(s, "{%") || has(s, "'") || has(s, "+")) continue;
        return s;
    }
    return "";
}

std::string trim(const std::string& s) {
    const char* ws = " \t\n\r";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

struct Turns {
    std::string system;
    std::vector<ChatMessage> rest;
};

Turns split_system(const std::vector<ChatMessage>& messages) {
    Turns t;
    for (const auto& m : messages) {
        if (m.role == "system" && t.rest.empty() && t.system.empty()) {
            t.system = m.content;
        } else {
            t.rest.push_back(m);
        }
    }
    return t;
}

}  // namespace

const char* chat_family_name(ChatFamily f) {
    switch (f) {
        case ChatFamily::CHATML: return "chatml";
        case ChatFamily::LLAMA3: return "llama3";
        case ChatFamily::LLAMA2: return "llama2";
        case ChatFamily::GEMMA: return "gemma";
        case ChatFamily::DEEPSEEK2: return "deepseek2";
        case ChatFamily::DEEPSEEK3: return "deepseek3";
        case ChatFamily::MISTRAL: return "mistral";
        case ChatFamily::MISTRAL_V7: return "mistral-v7";
    }
    return "?";
}

ChatTemplate chat_template_from_name(const std::string& name) {
    const ChatFamily all[] = {ChatFamily::CHATML,    ChatFamily::LLAMA3,    ChatFamily::LLAMA2,  ChatFamily::GEMMA,
                              ChatFamily::DEEPSEEK2, ChatFamily::DEEPSEEK3, ChatFamily::MISTRAL, ChatFamily::MISTRAL_V7};
    std::string names;
    for (ChatFamily f : all) {
        if (name == chat_family_name(f)) return ChatTemplate{f, ""};
        names += (names.empty() ? "" : ", ") + std::string(chat_family_name(f));
    }
    throw Error(strfmt("unknown chat template '%s' (known: %s)", name.c_str(), names.c_str()));
}

ChatTemplate chat_template_from_text(const std::string& text) {
    ChatTemplate t;
    if (text.empty() || has(text, "<|im_start|>")) {
        t.family = ChatFamily::CHATML;
        t.default_system = chatml_default_system(text);
    } else if (has(text, "<|start_header_id|>") && has(text, "<|eot_id|>")) {
        t.family = ChatFamily::LLAMA3;
    } else if (has(text, "<start_of_turn>")) {
        t.family = ChatFamily::GEMMA;
    } else if (has(text, "<｜Assistant｜>") || has(text, "<|Assistant|>")) {
        t.family = ChatFamily::DEEPSEEK3;
    } else if (has(text, "'Assistant: '") || has(text, "\"Assistant: \"")) {
        t.family = ChatFamily::DEEPSEEK2;
    } else if (has(text, "[SYSTEM_PROMPT]")) {
        t.family = ChatFamily::MISTRAL_V7;
    } else if (has(text, "<<SYS>>")) {
        t.family = ChatFamily::LLAMA2;
    } else if (has(text, "[INST]")) {
        t.family = ChatFamily::MISTRAL;
    } else {
        throw Error("the model's chat template matches no known family; choose one with --chat-template "
                    "(chatml, llama3, llama2, gemma, deepseek2, deepseek3, mistral, mistral-v7)");
    }
    return t;
}

std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages, bool add_assistant) {
    std::string out;
    switch (tmpl.family) {
        case ChatFamily::CHATML: {
            const bool has_system = !messages.empty() && messages[0].role == "system";
            if (!has_system && !tmpl.default_system.empty())
                out += "<|im_start|>system\n" + tmpl.default_system + "<|im_end|>\n";
            for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
            if (add_assistant) out += "<|im_start|>assistant\n";
            break;
        }
        case ChatFamily::LLAMA3:
            // Llama 3's template trims each message.
            for (const auto& m : messages)
                out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
            if (add_assistant) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        case ChatFamily::LLAMA2: {
            Turns t = split_system(messages);
            bool first_user = true;
            for (const auto& m : t.rest) {
                if (m.role == "user") {
                    // Every turn after the first opens with its own BOS.
                    if (!first_user) out += "<s>";
                    out += "[INST] ";
                    if (first_user && !t.system.empty()) out += "<<SYS>>\n" + t.system + "\n<</SYS>>\n\n";
                    out += m.content + " [/INST]";
                    first_user = false;
                } else {
                    out += " " + m.content + " </s>";
                }
            }
            break;
        }
        case ChatFamily::GEMMA: {
            // Gemma has no system role: the system text opens the first user turn.
            Turns t = split_system(messages);
            bool first = true;
            for (const auto& m : t.rest) {
                const std::string role = m.role == "assistant" ? "model" : m.role;
                std::string content = m.content;
                if (first && m.role == "user" && !t.system.empty()) content = t.system + "\n\n" + content;
                first = false;
                out += "<start_of_turn>" + role + "\n" + content + "<end_of_turn>\n";
            }
            if (add_assistant) out += "<start_of_turn>model\n";
            break;
        }
        case ChatFamily::DEEPSEEK2:
            for (const auto& m : messages) {
                if (m.role == "system") out += m.content + "\n\n";
                else if (m.role == "user") out += "User: " + m.content + "\n\n";
                else out += "Assistant: " + m.content + "<｜end▁of▁sentence｜>";
            }
            if (add_assistant) out += "Assistant:";
            break;
        case ChatFamily::DEEPSEEK3:
            for (const auto& m : messages) {
                if (m.role == "system") out += m.content;
                else if (m.role == "user") out += "<｜User｜>" + m.content;
                else out += "<｜Assistant｜>" + m.content + "<｜end▁of▁sentence｜>";
            }
            if (add_assistant) out += "<｜Assistant｜>";
            break;
        case ChatFamily::MISTRAL:
        case ChatFamily::MISTRAL_V7: {
            const bool v7 = tmpl.family == ChatFamily::MISTRAL_V7;
            Turns t = split_system(messages);
            if (v7 && !t.system.empty()) out += "[SYSTEM_PROMPT] " + t.system + "[/SYSTEM_PROMPT]";
            bool first_user = true;
            for (const auto& m : t.rest) {
                if (m.role == "user") {
                    std::string content = m.content;
                    if (!v7 && first_user && !t.system.empty()) content = t.system + "\n\n" + content;
                    out += "[INST] " + content + "[/INST]";
                    first_user = false;
                } else {
                    out += " " + m.content + "</s>";
                }
            }
            break;
        }
    }
    return out;
}

}  // namespace mf
