/*
 * kaito-copy SRC DEST
 *
 * A static copy program for init containers whose image may be FROM scratch (no shell, no cp).
 * SRC a file: copy it to DEST, creating DEST's parent directories, preserving the mode bits.
 * SRC a directory: copy its contents recursively into DEST (created as needed); files keep their
 * mode, symlinks are recreated as symlinks. Any error: a message on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int fail(const char *what, const char *path) {
    fprintf(stderr, "kaito-copy: %s %s: %s\n", what, path, strerror(errno));
    return -1;
}

/* mkdir -p: every missing directory of path (path itself included) */
static int make_dirs(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0) return 0;
    if (len >= sizeof buf) { errno = ENAMETOOLONG; return fail("path too long", path); }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST) return fail("cannot create directory", buf);
            struct stat st;
            if (stat(buf, &st) != 0) return fail("cannot stat", buf);
            if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return fail("not a directory:", buf); }
            *p = saved;
            if (saved == '\0') break;
        }
    }
    return 0;
}

static int make_parent_dirs(const char *path) {
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof buf) { errno = ENAMETOOLONG; return fail("path too long", path); }
    memcpy(buf, path, len + 1);
    char *slash = strrchr(buf, '/');
    if (slash == NULL || slash == buf) return 0;
    *slash = '\0';
    return make_dirs(buf, 0755);
}

static int copy_file(const char *src, const char *dest, mode_t mode) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return fail("cannot open", src);
    int out = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
    if (out < 0) { int e = errno; close(in); errno = e; return fail("cannot create", dest); }
    static char buf[1 << 20];
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) { if (errno == EINTR) continue; rc = fail("cannot read", src); break; }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0) { if (errno == EINTR) continue; rc = fail("cannot write", dest); break; }
            off += w;
        }
        if (rc) break;
    }
    /* the umask must not strip bits the source had */
    if (rc == 0 && fchmod(out, mode & 07777) != 0) rc = fail("cannot chmod", dest);
    if (close(out) != 0 && rc == 0) rc = fail("cannot close", dest);
    close(in);
    return rc;
}

static int join(char *buf, size_t size, const char *a, const char *b) {
    int n = snprintf(buf, size, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= size) { errno = ENAMETOOLONG; return fail("path too long", a); }
    return 0;
}

static int copy_tree(const char *src, const char *dest, mode_t dir_mode) {
    if (make_dirs(dest, 0755) != 0) return -1;
    DIR *d = opendir(src);
    if (d == NULL) return fail("cannot open directory", src);
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char s[PATH_MAX], t[PATH_MAX];
        if (join(s, sizeof s, src, e->d_name) || join(t, sizeof t, dest, e->d_name)) { rc = -1; break; }
        struct stat st;
        if (lstat(s, &st) != 0) { rc = fail("cannot stat", s); break; }
        if (S_ISDIR(st.st_mode)) {
            rc = copy_tree(s, t, st.st_mode);
        } else if (S_ISREG(st.st_mode)) {
            rc = copy_file(s, t, st.st_mode);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(s, target, sizeof target - 1);
            if (n < 0) { rc = fail("cannot read link", s); break; }
            target[n] = '\0';
            unlink(t);
            if (symlink(target, t) != 0) rc = fail("cannot create symlink", t);
        } else {
            fprintf(stderr, "kaito-copy: skipping special file %s\n", s);
        }
        errno = 0;
    }
    if (rc == 0 && errno != 0) rc = fail("cannot read directory", src);
    closedir(d);
    if (rc == 0 && chmod(dest, dir_mode & 07777) != 0) rc = fail("cannot chmod", dest);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: kaito-copy SRC DEST\n");
        return 2;
    }
    const char *src = argv[1], *dest = argv[2];
    struct stat st;
    if (stat(src, &st) != 0) { fail("cannot stat", src); return 1; }
    if (S_ISDIR(st.st_mode)) return copy_tree(src, dest, st.st_mode) == 0 ? 0 : 1;
    if (!S_ISREG(st.st_mode)) { fprintf(stderr, "kaito-copy: %s is not a file or directory\n", src); return 1; }
    if (make_parent_dirs(dest) != 0) return 1;
    return copy_file(src, dest, st.st_mode) == 0 ? 0 : 1;
}
