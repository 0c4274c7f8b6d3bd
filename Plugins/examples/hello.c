/* Plugin protocol v1 example compiled from C: proves that a handler can be any executable.
 * Build: cc -O2 -o hello hello.c
 * It reads the operation from stdin, counts its bytes, and returns a result fragment. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    size_t total = 0;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, stdin)) > 0) total += n;
    const char *id = getenv("SWITCHYARD_OPERATION_ID");
    printf("C plugin: operation %s, %zu bytes of input\n", id ? id : "?", total);
    printf("{\"switchyard\":\"result\",\"fragments\":{\"acme_Hello\":{\"inputBytes\":%zu,\"greeting\":\"hello from C\"}}}\n", total);
    return argc > 1 && argv[1][0] == 'f' ? 1 : 0;
}
