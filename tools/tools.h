// The minfer subcommands: one file per tool, each a main-like function. Tools parse flags and
// print; bad input reaches them as mf::Error and leaves as one line on stderr and exit code 1.
#pragma once

namespace mf {

int tool_info(int argc, char** argv);  // minfer info FILE.gguf
int tool_run(int argc, char** argv);   // minfer run -m MODEL -p TEXT
int tool_chat(int argc, char** argv);  // minfer chat -m MODEL
int tool_bench(int argc, char** argv); // minfer bench -m MODEL [-p N] [-n N] [-r N]
int tool_tokenize(int argc, char** argv);  // minfer tokenize -m MODEL (-p TEXT | -f FILE)
int tool_synth(int argc, char** argv);     // minfer synth --shape NAME --type TYPE -o FILE.gguf
int tool_convert(int argc, char** argv);   // minfer convert HF_DIR -o OUT.gguf [--type TYPE]
int tool_quantize(int argc, char** argv);  // minfer quantize [-t N] IN.gguf OUT.gguf TYPE
int tool_perplexity(int argc, char** argv);  // minfer perplexity -m MODEL -f TEXT [-c N] [--kl-base FILE]
int tool_attn_lab(int argc, char** argv);    // minfer attn-lab [--shape NAME | -m MODEL] [-o DIR]

}  // namespace mf
