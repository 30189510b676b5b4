// Model loading: metadata -> HParams and Vocab, tensors -> weights on the backend, with every
// weight's shape checked against the hyperparameters before anything is uploaded.
#include "models/model.h"

#include <algorithm>

#include "core/common.h"
#include "core/gguf.h"

namespace mf {

namespace {

// Creates weight tensors from the file's tensor table, checking names and shapes. mapped: the
// backend computes on host memory, so the weights stay in the file's mapping (upload) instead of
// being copied, and a stack is made only where its parts already lie back to back there.
class WeightLoader {
public:
    WeightLoader(const GGUFFile& file, Model& model, bool mapped) : file_(file), model_(model), mapped_(mapped) {}

    // The tensor called name with exactly the shape ne (n_dims entries; missing dims are 1).
    Tensor* require(const std::string& name, std::initializer_list<int64_t> shape) {
        Tensor* t = optional(name, shape);
        if (!t) throw Error(strfmt("%s: missing tensor '%s'", file_.name().c_str(), name.c_str()));
        return t;
    }

    Tensor* optional(const std::string& name, std::initializer_list<int64_t> shape) {
        const GGUFTensorInfo* info = file_.find_tensor(name);
        if (!info) return nullptr;
        int64_t want[4] = {1, 1, 1, 1};
        int i = 0;
        for (int64_t d : shape) want[i++] = d;
        for (int d = 0; d < 4; ++d) {
            if (info->ne[d] != want[d])
                throw Error(strfmt("%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]",
                                   file_.name().c_str(), name.c_str(), (long long)info->ne[0], (long long)info->ne[1],
                                   (long long)info->ne[2], (long long)info->ne[3], (long long)want[0],
                                   (long long)want[1], (long long)want[2], (long long)want[3]));
        }
        if (!dtype_traits(info->type).computable)
            throw Error(strfmt("%s: tensor '%s' has type %s, which minfer cannot compute with", file_.name().c_str(),
                               name.c_str(), dtype_name(info->type)));
        Tensor* t = model_.ctx.new_tensor(info->type, 4, info->ne);
        t->name = name;
        t->flags |= TENSOR_PARAM;
        sources_.push_back({t, info});
        return t;
    }

    // A norm weight or bias: a vector of n f32 values (the elementwise ops read f32).
    Tensor* vector_f32(const std::string& name, int64_t n, bool required) {
        Tensor* t = required ? require(name, {n}) : optional(name, {n});
        if (t && t->type != DType::F32)
            throw Error(strfmt("%s: tensor '%s' has type %s; norm weights and biases must be f32",
                               file_.name().c_str(), name.c_str(), dtype_name(t->type)));
        return t;
    }

    // An f32 tensor computed at load from the file (YaRN factors, a transposed weight), not read.
    Tensor* computed(const std::string& name, std::initializer_list<int64_t> shape, std::vector<float> values) {
        int64_t ne[4] = {1, 1, 1, 1};
        int i = 0;
        for (int64_t d : shape) ne[i++] = d;
        Tensor* t = model_.ctx.new_tensor(DType::F32, i, ne);
        MF_ASSERT(size_t(t->nelements()) == values.size());
        t->name = name;
        t->flags |= TENSOR_PARAM;
        computed_.push_back({t, std::move(values)});
        return t;
    }

    // Whether stack() joins these parts: all present, one type, equal ne[0] (2-D) or 1-D, equal
    // ne[2]; mapped, also single matrices back to back in the file.
    bool stackable(const std::vector<Tensor*>& parts) const {
        const bool one_dim = parts.front() && parts.front()->ne[1] == 1;
        for (const Tensor* t : parts) {
            if (!t || t->type != parts.front()->type || (!one_dim && t->ne[0] != parts.front()->ne[0]) ||
                t->ne[2] != parts.front()->ne[2] || t->ne[3] != 1 || (t->ne[1] == 1) != one_dim ||
                (one_dim && t->ne[2] != 1))
                return false;
        }
        if (mapped_) {
            if (parts.front()->ne[2] != 1) return false;
            for (size_t i = 0; i + 1 < parts.size(); ++i) {
                const GGUFTensorInfo* a = info_of(parts[i]);
                if (static_cast<const char*>(a->data) + a->n_bytes != info_of(parts[i + 1])->data) return false;
            }
        }
        return true;
    }

    // One tensor holding parts (tensors this loader created, one type, equal ne[0] and ne[2]):
    // 2-D parts stacked along rows, 1-D ones joined end to end, 3-D ones (experts) stacked along rows
    // per index of dim 2, so that the fused matrix i2 is part 0's matrix i2, then part 1's, ... The
    // parts become views of it, so the bytes are uploaded once and every user of a part still reads
    // it. Null, and the parts left as they are, unless stackable(parts) (mapped, the stack is then a
    // view of the mapping: nothing is copied).
    Tensor* stack(const std::string& name, const std::vector<Tensor*>& parts) {
        if (!stackable(parts)) return nullptr;
        const bool one_dim = parts.front()->ne[1] == 1;
        int64_t rows = 0;
        for (const Tensor* t : parts) rows += one_dim ? t->ne[0] : t->ne[1];
        const int64_t ne[3] = {one_dim ? rows : parts.front()->ne[0], one_dim ? 1 : rows, parts.front()->ne[2]};
        Tensor* fused = model_.ctx.new_tensor(parts.front()->type, one_dim ? 1 : ne[2] > 1 ? 3 : 2, ne);
        fused->name = name;
        fused->flags |= TENSOR_PARAM;
        Stack st{fused, {}};
        for (Tensor* t : parts) {
            st.parts.push_back(source_of(t));
            sources_.erase(sources_.begin() + (&source_of(t) - sources_.data()));
        }
        stacks_.push_back(std::move(st));
        return fused;
    }

    // Row r of the file's tensor called name, as f32 (the tensor was checked by require()).
    std::vector<float> row_f32(const std::string& name, int64_t r) const {
        const GGUFTensorInfo* info = file_.find_tensor(name);
        MF_ASSERT(info && r < info->ne[1]);
        std::vector<float> out(size_t(info->ne[0]));
        const char* row = static_cast<const char*>(info->data) + size_t(r) * dtype_row_size(info->type, info->ne[0]);
        dtype_traits(info->type).to_float(row, out.data(), info->ne[0]);
        return out;
    }

    // Allocates every created tensor on the backend in one buffer and uploads the bytes; mapped, only
    // the computed ones: the file's tensors and their stacks point into the mapping.
    void upload(Backend& backend) {
        std::vector<Tensor*> ts;
        for (auto& c : computed_) ts.push_back(c.tensor);
        if (mapped_) {
            // A buffer that owns nothing: tensor_set refuses it, and nothing frees it.
            const GGUFTensorInfo& first = file_.tensor(0);
            char* section = const_cast<char*>(static_cast<const char*>(first.data)) - first.offset;
            model_.mapped_buffer =
                std::make_unique<Buffer>(&backend, section, file_.file_size() - file_.data_offset(), false);
            file_.prefetch();
            auto map = [&](Tensor* t, const GGUFTensorInfo* info) {
                t->data = const_cast<void*>(info->data);
                t->buffer = model_.mapped_buffer.get();
            };
            for (auto& s : sources_) map(s.tensor, s.info);
            for (auto& st : stacks_) map(st.fused, st.parts.front().info);  // the parts follow it (stack)
        } else {
            for (auto& s : sources_) ts.push_back(s.tensor);
            for (auto& st : stacks_) ts.push_back(st.fused);
        }
        model_.weight_buffer = allocate_tensors(backend, ts);
        model_.weight_bytes = 0;
        for (auto& s : sources_) {
            MF_ASSERT(s.tensor->nbytes() == s.info->n_bytes);
            if (!mapped_) tensor_set(s.tensor, s.info->data);
            model_.weight_bytes += s.info->n_bytes;
        }
        if (mapped_) model_.mapped_bytes = model_.weight_bytes;
        for (auto& c : computed_) {
            tensor_set(c.tensor, c.values.data());
            model_.weight_bytes += c.tensor->nbytes();
        }
        for (auto& st : stacks_) {
            // Matrix i2 of each part in turn (one matrix each for 1-D and 2-D parts).
            const int64_t mats = st.fused->ne[2];
            size_t offset = 0;
            for (int64_t i2 = 0; i2 < mats; ++i2) {
                for (const Source& part : st.parts) {
                    MF_ASSERT(part.tensor->nbytes() == part.info->n_bytes);
                    const size_t chunk = part.info->n_bytes / size_t(mats);
                    if (i2 == 0) {
                        part.tensor->view_src = st.fused;
                        part.tensor->view_offs = offset;
                        part.tensor->data = static_cast<char*>(st.fused->data) + offset;
                        part.tensor->buffer = st.fused->buffer;
                    }
                    if (!mapped_)
                        backend.upload(st.fused, static_cast<const char*>(part.info->data) + size_t(i2) * chunk,
                                       offset, chunk);
                    offset += chunk;
                }
            }
            MF_ASSERT(offset == st.fused->nbytes());
            model_.weight_bytes += offset;
            if (mapped_) model_.mapped_bytes += offset;
            for (const Source& part : st.parts) part.tensor->nb[2] = st.fused->nb[2];  // the parts' matrices interleave
        }
    }

private:
    struct Source {
        Tensor* tensor;
        const GGUFTensorInfo* info;
    };
    // The entry of sources_ for t (a tensor this loader created from the file and has not stacked).
    const Source& source_of(const Tensor* t) const {
        auto it = std::find_if(sources_.begin(), sources_.end(), [t](const Source& src) { return src.tensor == t; });
        MF_ASSERT(it != sources_.end());
        return *it;
    }
    const GGUFTensorInfo* info_of(const Tensor* t) const { return source_of(t).info; }
    struct Computed {
        Tensor* tensor;
        std::vector<float> values;
    };
    struct Stack {
        Tensor* fused;
        std::vector<Source> parts;  // in order, back to back in fused
    };
    const GGUFFile& file_;
    Model& model_;
    const bool mapped_;
    std::vector<Source> sources_;
    std::vector<Computed> computed_;
    std::vector<Stack> stacks_;
};

// deepseek2's attention (MLA) and FFN (dense, or experts from layer n_layer_dense_lead on).
void load_deepseek2_layer(WeightLoader& w, const HParams& hp, uint32_t il, LayerWeights& l) {
    const std::string p = strfmt("blk.%u.", il);
    const int64_t n_embd = hp.n_embd, n_head = hp.n_head, kv_lora = hp.kv_lora_rank;
    const int64_t nope = int64_t(hp.head_dim_k_mla) - hp.n_rot, v_dim = hp.head_dim_v_mla;
    const int64_t q_dim = n_head * hp.head_dim_k_mla;
    l.attn_norm = w.vector_f32(p + "attn_norm.weight", n_embd, true);
    if (hp.q_lora_rank > 0) {
        l.wq_a = w.require(p + "attn_q_a.weight", {n_embd, hp.q_lora_rank});
        l.attn_q_a_norm = w.vector_f32(p + "attn_q_a_norm.weight", hp.q_lora_rank, true);
        l.wq_b = w.require(p + "attn_q_b.weight", {hp.q_lora_rank, q_dim});
    } else {
        l.wq = w.require(p + "attn_q.weight", {n_embd, q_dim});
    }
    l.wkv_a_mqa = w.require(p + "attn_kv_a_mqa.weight", {n_embd, kv_lora + hp.n_rot});
    // Both read the normed input: one matmul (the parts stay usable as views).
    l.wq_kv_a = w.stack(p + "attn_q_kv_a.stacked", {l.wq ? l.wq : l.wq_a, l.wkv_a_mqa});
    l.attn_kv_a_norm = w.vector_f32(p + "attn_kv_a_norm.weight", kv_lora, true);
    l.wk_b = w.optional(p + "attn_k_b.weight", {nope, kv_lora, n_head});
    l.wv_b = w.optional(p + "attn_v_b.weight", {kv_lora, v_dim, n_head});
    if (!l.wk_b || !l.wv_b) {
        // Older files: kv_b [kv_lora, n_head * (nope + v)] in one. W_UV per head is a view of its rows
        // (arch_deepseek2.cpp); W_UK must be transposed for the query absorption, done here in f32.
        const std::string kv_b = p + "attn_kv_b.weight";
        if (l.wk_b) w.require(p + "attn_v_b.weight", {kv_lora, v_dim, n_head});  // throws: half a split
        if (l.wv_b) w.require(p + "attn_k_b.weight", {nope, kv_lora, n_head});
        l.wkv_b = w.require(kv_b, {kv_lora, n_head * (nope + v_dim)});
        std::vector<float> k_b(size_t(nope * kv_lora * n_head));
        for (int64_t h = 0; h < n_head; ++h)
            for (int64_t n = 0; n < nope; ++n) {
                const std::vector<float> row = w.row_f32(kv_b, h * (nope + v_dim) + n);
                for (int64_t r = 0; r < kv_lora; ++r) k_b[size_t((h * kv_lora + r) * nope + n)] = row[size_t(r)];
            }
        l.wk_b = w.computed(p + "attn_k_b.weight", {nope, kv_lora, n_head}, std::move(k_b));
    }
    l.wo = w.require(p + "attn_output.weight", {n_head * v_dim, n_embd});
    l.ffn_norm = w.vector_f32(p + "ffn_norm.weight", n_embd, true);
    if (hp.n_expert == 0 || il < hp.n_layer_dense_lead) {
        l.ffn_gate = w.require(p + "ffn_gate.weight", {n_embd, hp.n_ff});
        l.ffn_up = w.require(p + "ffn_up.weight", {n_embd, hp.n_ff});
        l.ffn_down = w.require(p + "ffn_down.weight", {hp.n_ff, n_embd});
        l.ffn_gate_up = w.stack(p + "ffn_gate_up.stacked", {l.ffn_gate, l.ffn_up});
        return;
    }
    const int64_t n_expert = hp.n_expert, n_ff_exp = hp.n_ff_exp, n_ff_sh = n_ff_exp * hp.n_expert_shared;
    l.ffn_gate_inp = w.require(p + "ffn_gate_inp.weight", {n_embd, n_expert});
    l.ffn_exp_probs_b = w.vector_f32(p + "exp_probs_b.bias", n_expert, false);
    l.ffn_gate_exps = w.require(p + "ffn_gate_exps.weight", {n_embd, n_ff_exp, n_expert});
    l.ffn_up_exps = w.require(p + "ffn_up_exps.weight", {n_embd, n_ff_exp, n_expert});
    // Each expert's gate rows, then its up rows: one MUL_MAT_ID for both (the parts stay views).
    l.ffn_gate_up_exps = w.stack(p + "ffn_gate_up_exps.stacked", {l.ffn_gate_exps, l.ffn_up_exps});
    l.ffn_down_exps = w.require(p + "ffn_down_exps.weight", {n_ff_exp, n_embd, n_expert});
    for (Tensor* t : {l.ffn_gate_exps, l.ffn_up_exps, l.ffn_gate_up_exps, l.ffn_down_exps})
        if (t) t->flags |= TENSOR_ID_WEIGHT;  // read by MUL_MAT_ID only (models/moe.cpp)
    if (n_ff_sh > 0) {
        l.ffn_gate_shexp = w.require(p + "ffn_gate_shexp.weight", {n_embd, n_ff_sh});
        l.ffn_up_shexp = w.require(p + "ffn_up_shexp.weight", {n_embd, n_ff_sh});
        l.ffn_down_shexp = w.require(p + "ffn_down_shexp.weight", {n_ff_sh, n_embd});
        l.ffn_gate_up_shexp = w.stack(p + "ffn_gate_up_shexp.stacked", {l.ffn_gate_shexp, l.ffn_up_shexp});
    }
}

}  // namespace

std::string weights_place(const Model& m) {
    if (m.mapped_bytes == 0) return std::string("in ") + m.backend->name() + " memory";
    if (m.mapped_bytes == m.weight_bytes) return "mapped from the file";
    return strfmt("%.1f MiB of them mapped from the file, the rest in %s memory", m.mapped_bytes / 1048576.0,
                  m.backend->name());
}

std::unique_ptr<Model> load_model(const std::string& path, Backend& backend) {
    auto model = std::make_unique<Model>();
    model->file = std::make_unique<GGUFFile>(GGUFFile::open(path));
    const GGUFFile& file = *model->file;
    model->path = path;
    model->backend = &backend;
    model->hp = load_hparams(file);
    model->vocab = load_vocab(file);
    model->chat_template = file.get_str("tokenizer.chat_template", "");
    const HParams& hp = model->hp;
    if (uint32_t(model->vocab.n_vocab()) != hp.n_vocab)
        throw Error(strfmt("%s: vocab_size %u differs from the tokenizer's %zu tokens", path.c_str(), hp.n_vocab,
                           size_t(model->vocab.n_vocab())));

    // Mapped weights keep the file's alignment, so only a file aligned to 32 bytes or more is mapped
    // (one may declare less; compilers may assume a float's alignment, at least). A file with no
    // tensors fails require() before upload; the mapping needs one to find its start.
    WeightLoader w(file, *model, backend.maps_weights() && file.alignment() % 32 == 0 && file.n_tensors() > 0);
    const int64_t n_embd = hp.n_embd, n_vocab = hp.n_vocab, n_ff = hp.n_ff;
    model->tok_embd = w.require("token_embd.weight", {n_embd, n_vocab});
    model->output_norm = w.vector_f32("output_norm.weight", n_embd, true);
    model->output = w.optional("output.weight", {n_embd, n_vocab});
    if (!model->output) model->output = model->tok_embd;  // tied embeddings
    model->rope_freqs = w.vector_f32("rope_freqs.weight", hp.n_rot / 2, false);
    if (hp.yarn_factor > 0.0f) {
        if (model->rope_freqs) throw Error(path + ": rope_freqs.weight and yarn rope scaling together are not supported");
        model->rope_freqs = w.computed("rope_freqs.yarn", {hp.n_rot / 2}, yarn_freq_factors(hp));
    }

    model->layers.resize(hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        LayerWeights& l = model->layers[il];
        if (hp.arch == "deepseek2") {
            load_deepseek2_layer(w, hp, il, l);
            continue;
        }
        const std::string p = strfmt("blk.%u.", il);
        const int64_t q_dim = int64_t(hp.n_head) * hp.head_dim_k;
        const int64_t k_dim = int64_t(hp.n_head_kv[il]) * hp.head_dim_k;
        const int64_t v_dim = int64_t(hp.n_head_kv[il]) * hp.head_dim_v;
        l.attn_norm = w.vector_f32(p + "attn_norm.weight", n_embd, true);
        l.wq = w.require(p + "attn_q.weight", {n_embd, q_dim});
        l.wk = w.require(p + "attn_k.weight", {n_embd, k_dim});
        l.wv = w.require(p + "attn_v.weight", {n_embd, v_dim});
        l.wo = w.require(p + "attn_output.weight", {int64_t(hp.n_head) * hp.head_dim_v, n_embd});
        if (hp.qkv_bias) {
            l.bq = w.vector_f32(p + "attn_q.bias", q_dim, true);
            l.bk = w.vector_f32(p + "attn_k.bias", k_dim, true);
            l.bv = w.vector_f32(p + "attn_v.bias", v_dim, true);
        }
        l.ffn_norm = w.vector_f32(p + "ffn_norm.weight", n_embd, true);
        l.ffn_gate = w.require(p + "ffn_gate.weight", {n_embd, n_ff});
        l.ffn_up = w.require(p + "ffn_up.weight", {n_embd, n_ff});
        l.ffn_down = w.require(p + "ffn_down.weight", {n_ff, n_embd});
        if (hp.arch == "gemma3") {
            l.attn_q_norm = w.vector_f32(p + "attn_q_norm.weight", hp.head_dim_k, true);
            l.attn_k_norm = w.vector_f32(p + "attn_k_norm.weight", hp.head_dim_k, true);
            l.post_attention_norm = w.vector_f32(p + "post_attention_norm.weight", n_embd, true);
            l.post_ffw_norm = w.vector_f32(p + "post_ffw_norm.weight", n_embd, true);
        }
        // q, k and v stacked only with their biases (build_qkv adds bqkv to the stacked product): a
        // mapped file may hold the weights back to back and not the biases.
        if (!hp.qkv_bias || w.stackable({l.bq, l.bk, l.bv})) {
            l.wqkv = w.stack(p + "attn_qkv.stacked", {l.wq, l.wk, l.wv});
            if (l.wqkv && hp.qkv_bias) l.bqkv = w.stack(p + "attn_qkv_bias.stacked", {l.bq, l.bk, l.bv});
        }
        l.ffn_gate_up = w.stack(p + "ffn_gate_up.stacked", {l.ffn_gate, l.ffn_up});
    }
    w.upload(backend);
    if (!model->mapped_buffer) model->file.reset();  // everything was copied out of it
    return model;
}

}  // namespace mf
