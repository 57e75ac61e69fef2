/*
 * Batched forward pass of a model.
 *
 * A gpfq_forward plans buffers once for a maximum batch: activations share a few
 * buffers by liveness (an activation's buffer is reused once its last reader has
 * run), element-wise ops run in place when their input dies with them (an Add over
 * its second operand, e.g. a ResNet block's input, when it is that value's last
 * reader), and identity/dropout/flatten are free aliases. One scratch area serves
 * every conv on im2col. A buffer is allocated when a pass first writes it. A conv
 * followed by the BatchNorm, residual Add and/or ReLU only it feeds runs them on its
 * output chunk by chunk, while it is in cache. A pass runs its images in
 * slices of gpfq_forward_slice(), each through every node before the next, so that activations go
 * from node to node through the cache rather than through memory.
 */
#ifndef GPFQ_FORWARD_H
#define GPFQ_FORWARD_H

#include <stddef.h>

#include "gpfq/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpfq_forward gpfq_forward;

/* Called after node `index` has run, with its output (n, out_shape). */
typedef void (*gpfq_node_hook)(void *ctx, int index, const float *output, size_t n);

gpfq_status gpfq_forward_create(const gpfq_model *model, size_t max_batch, gpfq_forward **out);

/* Images per slice of a pass: as many as keep the model's widest activation within about an
 * L2 cache (1 MB), but enough for 512 output pixels per channel of every conv, and at least 1.
 * A caller that only needs the logits can run batches of this size: smaller buffers, which
 * are not faulted in as whole-batch ones are. */
size_t gpfq_forward_slice(const gpfq_model *model);
/* Sets a plan's slice (at least 1); the values are those of separate passes over each slice's
 * images. */
void gpfq_forward_set_slice(gpfq_forward *fwd, size_t images);
void gpfq_forward_free(gpfq_forward *fwd);

/* Runs the whole graph on input (n, C, H, W), n <= max_batch. *logits points into
 * the forward's buffers, (n, num_classes), valid until the next run. */
gpfq_status gpfq_forward_run(gpfq_forward *fwd, const float *input, size_t n, const float **logits);

/* Like gpfq_forward_run, calling `hook` after every node. Nodes' outputs may be
 * overwritten later in the pass, so a hook copies what it keeps. */
gpfq_status gpfq_forward_run_hooked(gpfq_forward *fwd, const float *input, size_t n,
                                    const float **logits, gpfq_node_hook hook, void *ctx);

/* Runs nodes [from, upto) on input (n, C, H, W): a pass may stop after any node
 * and go on later from there, as long as `input` and n stay the same (the
 * quantization driver walks the network one layer at a time this way). After an error
 * (out of memory), run again from node 0: the range may have written over a value it reads
 * (an Add in place). */
gpfq_status gpfq_forward_range(gpfq_forward *fwd, const float *input, size_t n, int from, int upto);

/* The output of node `index` (n, out_shape) once it has run. It stays valid until
 * its last reader has run; in particular, after a range that stops before node j,
 * the outputs of j's inputs are valid. A conv's and the nodes' folded into it
 * (all but the last) are not in memory: only the last node's output is written.
 * A Flatten (or Identity, Dropout) of the model's input is not copied: its output
 * is the last pass's input itself. */
const float *gpfq_forward_output(const gpfq_forward *fwd, int index);

/* One past the last node that reads the pass's input, itself or through an alias (a Flatten of
 * it): once a range has run up to there, the input is not read again. */
int gpfq_forward_input_readers_end(const gpfq_forward *fwd);

/* The buffer node `index` writes its output to, for a caller that computes that output itself
 * and then goes on with gpfq_forward_range from index + 1 on the same input (the quantization
 * driver's Linear layers); NULL where the node writes none of its own (an alias of the pass's
 * input), or where its buffer, allocated here if no pass has yet, could not be. */
float *gpfq_forward_output_buffer(gpfq_forward *fwd, int index);
/* Allocates the buffers nodes [from, upto) write, where a pass has not yet (a pass allocates each
 * buffer when it first reaches a node that writes it): a caller that runs the pass on another
 * thread can take the memory on its own. */
gpfq_status gpfq_forward_reserve(gpfq_forward *fwd, int from, int upto);
/* Runs one node the plain way, outside any plan: reads `inputs` (n, in_shape),
 * writes output (n, out_shape); `scratch` holds gpfq_node_scratch() floats (NULL: a conv that
 * needs it allocates its own). GPFQ_ERR_NOMEM where a conv could not get a buffer. */
gpfq_status gpfq_node_forward(const gpfq_node *node, const float *const *inputs, size_t n,
                              float *output, float *scratch);
size_t gpfq_node_scratch(const gpfq_node *node, size_t n);

/* How many BatchNorm, Add, ReLU and 2x2 max-pool nodes the plan runs inside the conv before
 * them (a conv with a direct kernel, when nothing else reads its output; the values are the
 * same). */
int gpfq_forward_fused(const gpfq_forward *fwd);

/* A plan packs a conv's weights for the direct kernel when it first runs it and keeps them:
 * after changing node `index`'s weights (-1: any node's), call this before the next pass. */
void gpfq_forward_weights_changed(gpfq_forward *fwd, int index);

/* Packs every conv's weights now, as a first pass would. */
void gpfq_forward_pack(gpfq_forward *fwd);

/* From now on fwd runs its convs on owner's packed weights where owner holds them in the
 * current format, instead of packing its own copy (for plans that run the same model side by
 * side: one copy of resnet18's 157 MB of Winograd weights instead of one per thread). owner
 * must be a plan of the same model (else nothing is shared), packed (gpfq_forward_pack), and
 * outlive fwd; its packed weights are only read, so any number of plans may share them across
 * threads. gpfq_forward_weights_changed(fwd, ...) ends the sharing: fwd packs its own again. */
void gpfq_forward_share_packed(gpfq_forward *fwd, const gpfq_forward *owner);

/* Bytes of activation, scratch and packed-weight memory the plan may hold: an upper bound (a
 * buffer is sized for a plain pass until a hooked one needs more, the scratch only made for
 * convs on im2col). */
size_t gpfq_forward_bytes(const gpfq_forward *fwd);

#ifdef __cplusplus
}
#endif

#endif
