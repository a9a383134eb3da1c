/*  zx_list.h - the one intrusive doubly linked list of zexec: a zx__link_t
    embedded in each element, a zx__list_t holding head, tail and size.

    Why not czmq's zlistx: the queues that use this (the local executor's
    job queue, the broker's FIFOs and free lists) push and unlink an element
    per task, and an intrusive link costs no allocation and unlinks in O(1)
    from the element alone, where zlistx allocates a node per insert and needs
    its handle kept beside the element. Where an allocation per element does
    not matter, zlistx remains the choice. A zeroed zx__list_t (calloc) is an
    empty list.

    An element is on at most one list per link; an unlinked link has both
    pointers NULL (zx__link_init, and zx__list_remove leaves it so), which
    zx__link_linked tests only for an element that is never the single
    element of a list: use the list's own flag or size otherwise. Static
    inline: these sit on per-task paths. Tested by tests/test_list.c.
*/
#ifndef ZX_LIST_H
#define ZX_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct zx__link {
    struct zx__link *prev, *next;
} zx__link_t;

typedef struct {
    zx__link_t *head, *tail;
    size_t size;
} zx__list_t;

/* The element that holds link, given its type and the link's member name. */
#define ZX__CONTAINER(link, type, member) ((type *)(void *)((char *)(link)-offsetof(type, member)))

static inline void zx__list_init(zx__list_t *l)
{
    l->head = l->tail = NULL;
    l->size = 0;
}

static inline void zx__link_init(zx__link_t *n)
{
    n->prev = n->next = NULL;
}

static inline bool zx__list_empty(const zx__list_t *l)
{
    return l->head == NULL;
}

static inline void zx__list_push_back(zx__list_t *l, zx__link_t *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail) {
        l->tail->next = n;
    } else {
        l->head = n;
    }
    l->tail = n;
    l->size++;
}

static inline void zx__list_push_front(zx__list_t *l, zx__link_t *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head) {
        l->head->prev = n;
    } else {
        l->tail = n;
    }
    l->head = n;
    l->size++;
}

/* n must be on l. */
static inline void zx__list_remove(zx__list_t *l, zx__link_t *n)
{
    if (n->prev) {
        n->prev->next = n->next;
    } else {
        l->head = n->next;
    }
    if (n->next) {
        n->next->prev = n->prev;
    } else {
        l->tail = n->prev;
    }
    n->prev = n->next = NULL;
    l->size--;
}

/* Removes and returns the first link, or NULL. */
static inline zx__link_t *zx__list_pop_front(zx__list_t *l)
{
    zx__link_t *n = l->head;
    if (n) {
        zx__list_remove(l, n);
    }
    return n;
}

/* Moves the elements of from up to and including last (which must be on
   from) to to, which must be empty, in order; the rest stay on from. */
static inline void zx__list_take_front(zx__list_t *to, zx__list_t *from, zx__link_t *last)
{
    size_t n = 1;
    for (zx__link_t *k = from->head; k != last; k = k->next) {
        n++;
    }
    to->head = from->head;
    to->tail = last;
    to->size = n;
    from->head = last->next;
    if (from->head) {
        from->head->prev = NULL;
    } else {
        from->tail = NULL;
    }
    from->size -= n;
    last->next = NULL;
}

/* Moves every element of from to the end of to, in order; from is empty. */
static inline void zx__list_take_all(zx__list_t *to, zx__list_t *from)
{
    if (!from->head) {
        return;
    }
    if (to->tail) {
        to->tail->next = from->head;
        from->head->prev = to->tail;
    } else {
        to->head = from->head;
    }
    to->tail = from->tail;
    to->size += from->size;
    zx__list_init(from);
}

#endif
