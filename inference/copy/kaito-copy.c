/*
 * kaito-copy SRC DEST
 *
 * A static copy program for init containers whose image may be FROM scratch (no shell, no cp).
 * SRC a file: copy it to DEST, creating DEST's parent directories, preserving the permission bits.
 * SRC a directory: copy its contents into DEST (created as needed); files keep their permission
 * bits, symlinks are recreated as symlinks. Any error: a message on stderr and exit status 1.
 *
 * The source is untrusted (an adapter or weights image), so:
 * - the walk is iterative with O(1) open descriptors: no tree depth overflows the stack or the fd limit;
 * - a destination inside the source is refused (it would copy itself forever);
 * - nothing under DEST is followed: every entry is opened relative to its directory with O_NOFOLLOW,
 *   and an existing non-directory entry (a symlink, a hard link to elsewhere) is replaced, never written through;
 * - setuid, setgid and sticky bits are dropped.
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

#define PERMISSION_BITS 0777

static int fail(const char *what, const char *name) {
    fprintf(stderr, "kaito-copy: %s %s: %s\n", what, name, strerror(errno));
    return -1;
}

/* mkdir -p of the operator-given destination path (trusted, unlike anything inside it) */
static int make_dirs(const char *path) {
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0) return 0;
    if (len >= sizeof buf) { errno = ENAMETOOLONG; return fail("path too long", path); }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return fail("cannot create directory", buf);
            struct stat st;
            if (stat(buf, &st) != 0) return fail("cannot stat", buf);
            if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return fail("not a directory:", buf); }
            *p = saved;
            if (saved == '\0') break;
        }
    }
    return 0;
}

/* Remove whatever non-directory entry `name` is in dir_fd, so that it is recreated instead of followed. */
static int clear_entry(int dir_fd, const char *name) {
    if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT) return 0;
    return fail("cannot replace", name);
}

static int copy_data(int in, int out, const char *name) {
    static char buf[1 << 20];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0) return 0;
        if (n < 0) { if (errno == EINTR) continue; return fail("cannot read", name); }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0) { if (errno == EINTR) continue; return fail("cannot write", name); }
            off += w;
        }
    }
}

/* Copy the open regular file `in` to a fresh entry `name` of dest_dir. */
static int copy_file_at(int in, int dest_dir, const char *name, mode_t mode) {
    if (clear_entry(dest_dir, name) != 0) return -1;
    int out = openat(dest_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) return fail("cannot create", name);
    int rc = copy_data(in, out, name);
    /* after the data, and explicitly: the umask must not strip bits the source had */
    if (rc == 0 && fchmod(out, mode & PERMISSION_BITS) != 0) rc = fail("cannot chmod", name);
    if (close(out) != 0 && rc == 0) rc = fail("cannot close", name);
    return rc;
}

/* Open (creating if needed) directory `name` of dest_dir without following a symlink there. */
static int open_dest_dir(int dest_dir, const char *name) {
    if (mkdirat(dest_dir, name, 0700) != 0 && errno != EEXIST) { fail("cannot create directory", name); return -1; }
    int fd = openat(dest_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
        /* a symlink or a file stands where the directory goes: replace it */
        if (clear_entry(dest_dir, name) != 0) return -1;
        if (mkdirat(dest_dir, name, 0700) != 0) { fail("cannot create directory", name); return -1; }
        fd = openat(dest_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) fail("cannot open directory", name);
    return fd;
}

/* One directory level being copied: its entry names (read up front, so no DIR stays open). */
struct level {
    char **names;
    size_t count, next;
    mode_t mode;
};

static void free_level(struct level *l) {
    for (size_t i = 0; i < l->count; i++) free(l->names[i]);
    free(l->names);
}

static int read_names(int dir_fd, struct level *l, const char *shown) {
    int fd = dup(dir_fd);
    if (fd < 0) return fail("cannot open directory", shown);
    DIR *d = fdopendir(fd);
    if (d == NULL) { close(fd); return fail("cannot open directory", shown); }
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (l->count == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(l->names, cap * sizeof *grown);
            if (grown == NULL) { rc = fail("out of memory reading", shown); break; }
            l->names = grown;
        }
        if ((l->names[l->count] = strdup(e->d_name)) == NULL) { rc = fail("out of memory reading", shown); break; }
        l->count++;
        errno = 0;
    }
    if (rc == 0 && errno != 0) rc = fail("cannot read directory", shown);
    closedir(d);
    return rc;
}

/* Move both descriptors to their parent directories (".." of a directory opened with O_NOFOLLOW). */
static int ascend(int *src_fd, int *dest_fd) {
    int s = openat(*src_fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int d = openat(*dest_fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(*src_fd);
    close(*dest_fd);
    *src_fd = s;
    *dest_fd = d;
    if (s < 0 || d < 0) return fail("cannot return to parent directory", "..");
    return 0;
}

/* Copy one entry `name` of src_fd into dest_fd; a directory is returned in *child (fds, mode) for the caller to enter. */
static int copy_entry(int src_fd, int dest_fd, const char *name, int *child_src, int *child_dest, mode_t *child_mode) {
    struct stat st;
    if (fstatat(src_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return fail("cannot stat", name);
    if (S_ISDIR(st.st_mode)) {
        int s = openat(src_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s < 0) return fail("cannot open directory", name);
        int d = open_dest_dir(dest_fd, name);
        if (d < 0) { close(s); return -1; }
        *child_src = s;
        *child_dest = d;
        *child_mode = st.st_mode;
        return 0;
    }
    if (S_ISREG(st.st_mode)) {
        int in = openat(src_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (in < 0) return fail("cannot open", name);
        int rc = copy_file_at(in, dest_fd, name, st.st_mode);
        close(in);
        return rc;
    }
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(src_fd, name, target, sizeof target - 1);
        if (n < 0) return fail("cannot read link", name);
        target[n] = '\0';
        if (clear_entry(dest_fd, name) != 0) return -1;
        if (symlinkat(target, dest_fd, name) != 0) return fail("cannot create symlink", name);
        return 0;
    }
    fprintf(stderr, "kaito-copy: skipping special file %s\n", name);
    return 0;
}

/* Refuse a destination that is the source or lies inside it: walk up from DEST comparing with SRC. */
static int dest_inside_src(int dest_fd, const struct stat *src) {
    int fd = dup(dest_fd), inside = 0;
    while (fd >= 0) {
        struct stat here, up;
        if (fstat(fd, &here) != 0) break;
        if (here.st_dev == src->st_dev && here.st_ino == src->st_ino) { inside = 1; break; }
        if (fstatat(fd, "..", &up, 0) != 0) break;
        if (up.st_dev == here.st_dev && up.st_ino == here.st_ino) break; /* reached "/" */
        int parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(fd);
        fd = parent;
    }
    if (fd >= 0) close(fd);
    return inside;
}

static int copy_tree(const char *src, const char *dest, const struct stat *src_st) {
    if (make_dirs(dest) != 0) return -1;
    int src_fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0) return fail("cannot open directory", src);
    int dest_fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dest_fd < 0) { close(src_fd); return fail("cannot open directory", dest); }
    if (dest_inside_src(dest_fd, src_st)) {
        fprintf(stderr, "kaito-copy: destination %s is inside the source %s; refusing to copy a directory into itself\n",
                dest, src);
        close(src_fd);
        close(dest_fd);
        return -1;
    }
    struct level *levels = NULL;
    size_t depth = 0, cap = 0;
    int rc = 0;
    mode_t mode = src_st->st_mode;
    for (;;) {
        /* enter the directory src_fd/dest_fd: push a level with its names */
        if (depth == cap) {
            cap = cap ? 2 * cap : 64;
            struct level *grown = realloc(levels, cap * sizeof *grown);
            if (grown == NULL) { rc = fail("out of memory in", src); break; }
            levels = grown;
        }
        struct level *top = &levels[depth++];
        *top = (struct level){.names = NULL, .count = 0, .next = 0, .mode = mode};
        if ((rc = read_names(src_fd, top, src)) != 0) break;
        /* copy entries until a subdirectory is entered or this level is done (then pop, maybe several) */
        int entered = 0;
        while (depth > 0 && !entered) {
            top = &levels[depth - 1];
            if (top->next < top->count) {
                int cs = -1, cd = -1;
                if ((rc = copy_entry(src_fd, dest_fd, top->names[top->next++], &cs, &cd, &mode)) != 0) break;
                if (cs >= 0) {
                    close(src_fd);
                    close(dest_fd);
                    src_fd = cs;
                    dest_fd = cd;
                    entered = 1;
                }
                continue;
            }
            if (fchmod(dest_fd, top->mode & PERMISSION_BITS) != 0) { rc = fail("cannot chmod", dest); break; }
            free_level(top);
            depth--;
            if (depth > 0 && (rc = ascend(&src_fd, &dest_fd)) != 0) break;
        }
        if (rc != 0 || depth == 0) break;
    }
    while (depth > 0) free_level(&levels[--depth]);
    free(levels);
    if (src_fd >= 0) close(src_fd);
    if (dest_fd >= 0) close(dest_fd);
    return rc;
}

static int copy_single_file(const char *src, const char *dest, const struct stat *st) {
    char parent[PATH_MAX];
    size_t len = strlen(dest);
    if (len >= sizeof parent) { errno = ENAMETOOLONG; return fail("path too long", dest); }
    memcpy(parent, dest, len + 1);
    char *slash = strrchr(parent, '/');
    const char *name = dest;
    if (slash == parent) { parent[1] = '\0'; name = dest + 1; }
    else if (slash != NULL) { *slash = '\0'; name = slash + 1; if (make_dirs(parent) != 0) return -1; }
    else strcpy(parent, ".");
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return fail("cannot open", src);
    int dir = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) { close(in); return fail("cannot open directory", parent); }
    int rc = copy_file_at(in, dir, name, st->st_mode);
    close(dir);
    close(in);
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
    if (S_ISDIR(st.st_mode)) return copy_tree(src, dest, &st) == 0 ? 0 : 1;
    if (!S_ISREG(st.st_mode)) { fprintf(stderr, "kaito-copy: %s is not a file or directory\n", src); return 1; }
    return copy_single_file(src, dest, &st) == 0 ? 0 : 1;
}
