/* A qemu TCG plugin that counts the guest instructions executed between marker system calls.
 *
 * Built by edgekit (gcc, at first use, into the emulator cache) and loaded with
 *   qemu-aarch64 -plugin libinsncount.so,out=FILE ...
 * Each translated block adds its instruction count to one counter when it runs (an inline add,
 * no callback: cheap, and exact for a single-threaded guest). The guest calls the unused system
 * call MARKER (guest.py does, around each timed inference); each call records the counter, and
 * at exit FILE gets {"total": N, "marks": [...]}. Differences between marks are the instructions
 * one inference executed: deterministic for a given binary, input and core, unlike wall time.
 *
 * Only the few plugin API entry points used are declared here, in the two generations qemu has
 * had; edgekit builds the one the dynamic qemu takes (EDGEKIT_QEMU_PLUGIN_API, set from its
 * version in edgekit/emulate/environment.py):
 *   1  qemu before 9.0 (Debian bookworm's 7.2): one inline add to a plain counter per block.
 *   2  qemu 9.0 and later: the plain-counter inline op is gone (an API 1 build fails to load:
 *      "undefined symbol: qemu_plugin_register_vcpu_tb_exec_inline", under qemu 10.0.2) and
 *      plugins declaring API 1 are refused; the add goes to a per-vCPU scoreboard, summed at
 *      each mark.
 * The static qemu-user-static build cannot load plugins at all; Debian's qemu-user is dynamic
 * in 7.2 and static from 10.0, so counting under qemu 10 needs a qemu built with plugins.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>

#ifndef EDGEKIT_QEMU_PLUGIN_API
#define EDGEKIT_QEMU_PLUGIN_API 1
#endif

typedef uint64_t qemu_plugin_id_t;
#define EXPORT __attribute__((visibility("default")))
typedef struct { const char *target_name; struct { int min; int cur; } version; bool system_emulation;
  union { struct { int smp_vcpus; int max_vcpus; } system; }; } qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*syscall_cb)(qemu_plugin_id_t, unsigned int, int64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t, syscall_cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);

#if EDGEKIT_QEMU_PLUGIN_API >= 2
struct qemu_plugin_scoreboard;
typedef struct { struct qemu_plugin_scoreboard *score; size_t offset; } qemu_plugin_u64;
struct qemu_plugin_scoreboard *qemu_plugin_scoreboard_new(size_t element_size);
void qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(struct qemu_plugin_tb *, enum qemu_plugin_op,
                                                       qemu_plugin_u64, uint64_t);
uint64_t qemu_plugin_u64_sum(qemu_plugin_u64);
EXPORT int qemu_plugin_version = 2;
static qemu_plugin_u64 counter;  /* one uint64_t per vCPU */
static void count_block(struct qemu_plugin_tb *tb) {
  qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, counter, qemu_plugin_tb_n_insns(tb));
}
static uint64_t counted(void) { return qemu_plugin_u64_sum(counter); }
static void start_counting(void) {
  counter = (qemu_plugin_u64){qemu_plugin_scoreboard_new(sizeof(uint64_t)), 0};
}
#else
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
EXPORT int qemu_plugin_version = 1;
static uint64_t count;
static void count_block(struct qemu_plugin_tb *tb) {
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &count, qemu_plugin_tb_n_insns(tb));
}
static uint64_t counted(void) { return count; }
static void start_counting(void) {}
#endif

static uint64_t marks[4096];
static int nmarks;
static char outfile[4096];
#define MARKER 0x4544  /* an unused syscall number the guest calls between phases */

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) { count_block(tb); }
static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
  if (num == MARKER && nmarks < 4096) marks[nmarks++] = counted();
}
static void at_exit_cb(qemu_plugin_id_t id, void *p) {
  FILE *f = fopen(outfile, "w");
  if (!f) return;
  fprintf(f, "{\"total\": %llu, \"marks\": [", (unsigned long long)counted());
  for (int i = 0; i < nmarks; i++) fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)marks[i]);
  fprintf(f, "]}\n");
  fclose(f);
}
EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (strncmp(argv[i], "out=", 4) == 0) snprintf(outfile, sizeof outfile, "%s", argv[i] + 4);
  if (!outfile[0]) { fprintf(stderr, "insncount: pass out=FILE\n"); return -1; }
  start_counting();
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
  qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, at_exit_cb, NULL);
  return 0;
}
