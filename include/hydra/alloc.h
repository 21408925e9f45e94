/* hydra/alloc.h */
#ifndef HYDRA_ALLOC_H
#define HYDRA_ALLOC_H

#endif /* HYDRA_ALLOC_H */
